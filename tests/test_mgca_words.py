"""MGCA's official word slots (kgvlp/modules/mgca_words.py) on hand-made reports: what the
official merge (encoder.py:307-397 @680fe4a) does to a short and to a full-length report."""
from __future__ import annotations

import torch

from kgvlp.models.context import StepContext
from kgvlp.modules.mgca_words import mgca_word_slots, official_word_index

# L = 8. Row 0: [CLS] a ##b c [SEP] pad pad pad — words "ab", "c".
# Row 1: [CLS] a b ##c d ##e ##f [SEP] — full: its [SEP] is position L − 1.
WORD_INDEX = torch.tensor([[-1, 0, 0, 1, -1, -1, -1, -1],
                           [-1, 0, 1, 1, 2, 2, 2, -1]])
ATTENTION_MASK = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0],
                               [1, 1, 1, 1, 1, 1, 1, 1]])
CLS_ATTENTION = torch.tensor([[0.10, 0.20, 0.30, 0.15, 0.25, 0.0, 0.0, 0.0],
                              [0.05, 0.10, 0.15, 0.20, 0.10, 0.10, 0.20, 0.10]])


def test_a_short_report_gets_its_words_then_sep_and_a_full_one_loses_its_last_word():
    index = official_word_index(WORD_INDEX, ATTENTION_MASK)

    assert index.tolist() == [[-1, 0, 0, 1, 2, -1, -1, -1],     # [SEP] is word 2
                              [-1, 0, 1, 1, -1, -1, -1, -1]]    # "def" and [SEP] are gone


def test_each_slot_holds_the_attention_to_the_tokens_one_place_to_its_right():
    states = torch.arange(8.0)[None, :, None].expand(2, 8, 1)   # state of token t = t

    slots = mgca_word_slots(states, CLS_ATTENTION, WORD_INDEX, ATTENTION_MASK)

    assert slots.tokens.shape == (2, 7, 1)                       # L − 1 slots
    assert slots.tokens[..., 0].tolist() == [[3.0, 3.0, 4.0, 0, 0, 0, 0],   # a+b, c, [SEP]
                                             [1.0, 5.0, 0, 0, 0, 0, 0]]     # a, b+c
    torch.testing.assert_close(slots.weights, torch.tensor(
        [[0.30 + 0.15, 0.25, 0.0, 0, 0, 0, 0],      # "ab" ← tokens 2, 3; "c" ← 4; [SEP] ← pad
         [0.15, 0.20 + 0.10, 0, 0, 0, 0, 0]]))      # "a" ← 2; "bc" ← 3, 4
    assert slots.mask.tolist() == [[True, True, True, False, False, False, False],
                                   [True, True, False, False, False, False, False]]


def test_cta_quirks_build_the_official_slots_on_a_real_model_and_the_default_does_not(tokenizer, reports):
    from kgvlp.objectives.cta import CTAConfig
    from kgvlp_tiny import MAX_LENGTH, make_batch, make_model
    quirk, default = (make_model({"cta": CTAConfig(official_quirks=flag)}) for flag in (True, False))
    batch = make_batch(tokenizer, reports)

    slots = quirk.encode(batch).extras["mgca_words"]
    loss, _ = quirk(batch, StepContext(step=1, epoch=1.0))

    assert "mgca_words" in quirk.services and "mgca_words" not in default.services
    assert slots.tokens.shape[1] == MAX_LENGTH - 1
    assert torch.isfinite(loss)
