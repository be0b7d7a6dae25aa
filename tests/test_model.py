"""Encoders and the feature plumbing MGCA relies on: word merging, word/sentence indices,
patch weights (ViT attention, uniform for CNNs), [CLS] word attention."""
from __future__ import annotations

import pytest
import torch

from kgvlp_tiny import IMAGE_SIZE, make_batch, make_model
from kgvlp.config.schema import ImageEncoderConfig
from kgvlp.data.text import tokenize_reports
from kgvlp.models.features import Need
from kgvlp.models.image import build_image_encoder
from kgvlp.models.text import merge_words
from kgvlp.objectives.cta import CTAConfig
from kgvlp.objectives.ita import ITAConfig


def merge_words_reference(values, word_index, num_words):
    """MGCA's per-token loop: add each token's value to its word's slot; -1 tokens drop."""
    out = torch.zeros(values.shape[0], num_words, *values.shape[2:], dtype=values.dtype)
    for row in range(values.shape[0]):
        for position in range(values.shape[1]):
            word = int(word_index[row, position])
            if word >= 0:
                out[row, word] += values[row, position]
    return out


@pytest.mark.parametrize("trailing", [(), (5,)], ids=["per-token scalars", "token vectors"])
def test_merge_words_equals_the_per_token_reference_loop(tokenizer, reports, trailing):
    batch = make_batch(tokenizer, reports)
    values = torch.randn(*batch.word_index.shape, *trailing, generator=torch.Generator().manual_seed(0))

    merged = merge_words(values, batch.word_index, num_words=30)

    torch.testing.assert_close(merged, merge_words_reference(values, batch.word_index, 30))


def test_tokenize_reports_indexes_sub_word_pieces_by_word_and_sentence(tokenizer):
    reports = [["mild cardiomegaly with pneumothorax", "no effusion"]]

    text = tokenize_reports(tokenizer, reports, max_length=24)

    pieces = tokenizer.convert_ids_to_tokens(text.input_ids[0])
    words: dict[int, str] = {}
    sentences: dict[int, int] = {}
    for piece, word, sentence in zip(pieces, text.word_index[0].tolist(), text.sentence_index[0].tolist()):
        if word >= 0:
            words[word] = words.get(word, "") + piece.removeprefix("##")
            sentences[word] = sentence
    assert pieces[0] == "[CLS]" and pieces[text.attention_mask[0].sum() - 1] == "[SEP]"
    assert any(p.startswith("##") for p in pieces)            # the case under test: sub-words
    assert words == dict(enumerate(["mild", "cardiomegaly", "with", "pneumothorax", "no", "effusion"]))
    assert sentences == {0: 0, 1: 0, 2: 0, 3: 0, 4: 1, 5: 1}
    assert (text.word_index[0][text.attention_mask[0] == 0] == -1).all()


def test_tokenize_reports_truncates_but_keeps_sep_last(tokenizer, reports):
    text = tokenize_reports(tokenizer, reports[:1], max_length=8)

    assert text.attention_mask[0].all()
    assert text.input_ids[0, -1] == tokenizer.sep_token_id
    assert text.word_index[0, -1] == -1


def vit_attention_reference(encoder, images):
    """The last block's CLS→patch attention from timm's own (non-fused) attention path."""
    captured = []
    attention = encoder.backbone.blocks[-1].attn
    attention.fused_attn = False
    handle = attention.attn_drop.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0]))
    try:
        encoder.backbone.forward_features(images)
    finally:
        handle.remove()
    return captured[0].mean(dim=1)[:, 0, 1:]   # softmaxed (B, H, N, N) → heads mean, CLS row


def test_vit_patch_weights_are_the_last_blocks_cls_attention():
    torch.manual_seed(0)
    encoder = build_image_encoder(ImageEncoderConfig(name="vit_test", image_size=IMAGE_SIZE)).eval()
    images = torch.randn(2, 1, IMAGE_SIZE, IMAGE_SIZE)

    with torch.no_grad():
        out = encoder(images)
        expected = vit_attention_reference(encoder, images)

    assert out.patch_weights.shape == (2, (IMAGE_SIZE // 16) ** 2)
    torch.testing.assert_close(out.patch_weights, expected, atol=1e-6, rtol=1e-5)


def test_vit_patch_weights_over_patches_sum_to_at_most_one_with_cls_excluded():
    # The CLS row's softmax runs over CLS + patches; MGCA keeps only the patch part and
    # renormalises after clipping, so the raw weights sum to 1 minus CLS's self-attention.
    torch.manual_seed(0)
    encoder = build_image_encoder(ImageEncoderConfig(name="vit_test", image_size=IMAGE_SIZE)).eval()
    with torch.no_grad():
        weights = encoder(torch.randn(2, 1, IMAGE_SIZE, IMAGE_SIZE)).patch_weights

    assert ((weights > 0) & (weights < 1)).all()
    assert (weights.sum(dim=1) <= 1 + 1e-6).all()


def test_resnet_patch_weights_are_uniform():
    torch.manual_seed(0)
    encoder = build_image_encoder(ImageEncoderConfig(name="resnet_test", image_size=IMAGE_SIZE)).eval()
    with torch.no_grad():
        out = encoder(torch.randn(2, 1, IMAGE_SIZE, IMAGE_SIZE))

    tokens = out.tokens.shape[1]
    assert tokens == (IMAGE_SIZE // 16) ** 2                         # layer3: stride 16
    torch.testing.assert_close(out.patch_weights, torch.full((2, tokens), 1.0 / tokens))


def test_text_cls_attention_is_the_last_layers_attention_averaged_over_heads(tokenizer, reports):
    model = make_model({"cta": CTAConfig()}).eval()
    batch = make_batch(tokenizer, [sentences[:1] for sentences in reports])
    bert = model.text_encoder.bert
    bert.set_attn_implementation("eager")

    with torch.no_grad():
        ours = model.text_encoder(batch.input_ids, batch.attention_mask).cls_attention
        reference = bert(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                         output_attentions=True).attentions[-1].mean(dim=1)[:, 0]

    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-5)
    assert (ours[batch.attention_mask == 0] == 0).all()


def test_model_computes_only_the_features_enabled_objectives_require(tokenizer, reports):
    model = make_model({"ita": ITAConfig()})

    features = model.encode(make_batch(tokenizer, reports))

    assert Need.WORDS not in model.needs
    assert features.image_embed is not None and features.text_embed is not None
    assert features.word_tokens is None


def test_frozen_text_layers_get_no_gradient_and_the_rest_train(tokenizer, reports):
    """model.text.frozen_layers=N: embeddings and the first N layers stay as loaded."""
    from kgvlp.config.schema import TextEncoderConfig
    from kgvlp.models.text import TextEncoder
    encoder = TextEncoder(TextEncoderConfig(max_length=32, num_layers=2, frozen_layers=1))
    batch = make_batch(tokenizer, reports)
    encoder(batch.input_ids, batch.attention_mask).global_vector.sum().backward()

    bert = encoder.bert
    for module in (bert.embeddings, bert.encoder.layer[0]):
        assert all(p.grad is None and not p.requires_grad for p in module.parameters())
    assert all(p.grad is not None for p in bert.encoder.layer[1].parameters())


def test_freezing_more_text_layers_than_exist_fails_naming_the_key():
    from kgvlp.config.schema import TextEncoderConfig
    from kgvlp.models.text import TextEncoder
    with pytest.raises(ValueError, match=r"model.text.frozen_layers: expected 0..2"):
        TextEncoder(TextEncoderConfig(num_layers=2, frozen_layers=3))


def test_frozen_layers_minus_one_locks_the_whole_text_tower():
    from kgvlp.config.schema import TextEncoderConfig
    from kgvlp.models.text import TextEncoder
    encoder = TextEncoder(TextEncoderConfig(num_layers=2, frozen_layers=-1, projection_dim=8))
    assert not any(p.requires_grad for p in encoder.bert.parameters())
    assert all(p.requires_grad for p in encoder.token_projection.parameters())
