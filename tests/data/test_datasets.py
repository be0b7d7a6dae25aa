import torch

from kgvlp.config.schema import DataConfig
from kgvlp.data import build_downstream_dataset, build_pretrain_dataset
from kgvlp.data.collate import Collator, Sample


def test_pretrain_sample_matches_the_contract(synth_dir):
    cfg = DataConfig(root=str(synth_dir), resize=128, image_size=112, second_view=True, max_sentences=3)
    dataset = build_pretrain_dataset(cfg, train=True)
    sample = dataset[0]

    assert isinstance(sample, Sample)
    assert sample.image.shape == (1, 112, 112) and sample.image_view2.shape == (1, 112, 112)
    assert -1.0 <= sample.image.min() and sample.image.max() <= 1.0
    assert 1 <= len(sample.sentences) <= 3 and sample.labels.shape == (9,)
    assert len(dataset) == sum(m["split"] == "pretrain" for m in dataset.cache.meta)


def test_eval_transform_is_deterministic(synth_dir):
    dataset = build_pretrain_dataset(DataConfig(root=str(synth_dir), resize=128, image_size=112), train=False)

    assert torch.equal(dataset[1].image, dataset[1].image)


def test_empty_report_gives_none(synth_dir):
    dataset = build_pretrain_dataset(DataConfig(root=str(synth_dir), resize=128, image_size=112))
    dataset.cache.meta[dataset.rows[0]] = {**dataset.cache.meta[dataset.rows[0]],
                                           "findings": "", "impression": "", "report": "."}

    assert dataset[0] is None and dataset[1] is not None


def test_collator_drops_unreadable_samples(synth_dir, minilm_path):
    from transformers import AutoTokenizer
    dataset = build_pretrain_dataset(DataConfig(root=str(synth_dir), resize=128, image_size=112))
    collate = Collator(AutoTokenizer.from_pretrained(minilm_path), max_length=64)

    batch = collate([dataset[0], None, dataset[1]])

    assert batch.size == 2 and batch.skipped == 1 and batch.labels.shape == (2, 9)
    assert batch.input_ids.shape == (2, 64)


def test_synthcxr_generated_from_config(tmp_path):
    cfg = DataConfig(cache_dir=str(tmp_path), synth_n=10, synth_image_size=64, resize=64, image_size=56,
                     max_samples=4)
    dataset = build_pretrain_dataset(cfg)

    assert len(dataset) == 4 and dataset[0].image.shape == (1, 56, 56)


def test_downstream_item_has_aligned_masks_and_boxes(synth_dir):
    dataset = build_downstream_dataset(synth_dir, "train", image_size=64)
    item = next(dataset[i] for i in range(len(dataset)) if len(dataset[i].finding_names))

    assert item.image.shape == (1, 64, 64) and item.masks.shape[1:] == (64, 64)
    assert len(item.finding_names) == item.masks.shape[0] == item.boxes.shape[0]
    for mask, box in zip(item.masks, item.boxes):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert abs(xs.float().mean() - (box[0] + box[2]) / 2) < (box[2] - box[0]) / 2 + 2
    assert len(dataset.label_cuis) == len(dataset.label_names) == 9


def test_label_fractions_are_nested_and_cover_labels(synth_dir):
    full = build_downstream_dataset(synth_dir, "train")
    tenth = build_downstream_dataset(synth_dir, "train", fraction=0.1, seed=0)
    third = build_downstream_dataset(synth_dir, "train", fraction=0.34, seed=0)

    assert len(full) == 15 and len(tenth) == 2 and len(third) == 5
    assert set(tenth.rows) <= set(third.rows) <= set(full.rows)
