import numpy as np

from kgvlp.data.cache import ImageCache
from kgvlp.data.synth.findings import LABEL_NAMES, sample_study
from kgvlp.data.synth.generate import ensure_synthcxr, make_study, synthcxr_folder
from kgvlp.data.synth.reports import write_report
from kgvlp.data.text import split_sentences


def test_study_is_deterministic_by_seed_and_index():
    image_a, masks_a, meta_a = make_study(5, seed=1, size=96)
    image_b, masks_b, meta_b = make_study(5, seed=1, size=96)
    image_c, _, _ = make_study(6, seed=1, size=96)

    assert np.array_equal(image_a, image_b) and meta_a == meta_b
    assert all(np.array_equal(a, b) for a, b in zip(masks_a, masks_b))
    assert not np.array_equal(image_a, image_c)


def test_mention_words_index_the_cleaned_report():
    rng = np.random.default_rng(0)
    for _ in range(200):
        instances = sample_study(rng)
        findings, impression, mentions = write_report(rng, instances)
        words = " ".join(split_sentences(findings + "\n" + impression)).split()
        for m in mentions:
            assert m.words and max(m.words) < len(words)
            assert m.negated == (m.instances == [])


def test_absent_pleural_findings_are_negated_together():
    rng = np.random.default_rng(1)
    findings, _, mentions = write_report(rng, [])
    negated = {m.finding for m in mentions if m.negated}

    assert {"pleural_effusion", "pneumothorax", "cardiomegaly"} <= negated
    assert "pneumothorax" in findings.lower()


def test_cache_holds_labels_boxes_masks_and_splits(synth_dir):
    cache = ImageCache(synth_dir)

    assert len(cache) == 60 and cache.image(0).shape == (128, 128)
    assert cache.label_names == list(LABEL_NAMES)
    assert {m["split"] for m in cache.meta} == {"pretrain", "train", "val", "test"}
    for meta in cache.meta:
        for inst in meta["instances"]:
            assert meta["labels"][LABEL_NAMES.index(inst["finding"])] == 1.0
            x0, y0, x1, y1 = inst["box"]
            mask = cache.mask(inst["mask"])
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)


def test_findings_are_placed_on_the_reported_side():
    # patient's right is the image's left in a frontal radiograph
    rng = np.random.default_rng(0)
    from kgvlp.data.synth.findings import Instance
    from kgvlp.data.synth.render import render
    _, (right, left) = render(rng, [Instance("pleural_effusion", side="right", size="moderate"),
                                    Instance("pleural_effusion", side="left", size="moderate")], 128)

    assert np.nonzero(right)[1].mean() < 64 < np.nonzero(left)[1].mean()


def test_prevalence_is_realistic():
    rng = np.random.default_rng(0)
    studies = [sample_study(rng) for _ in range(2000)]
    normal = np.mean([not s for s in studies])
    counts = {name: np.mean([any(i.finding == name for i in s) for s in studies]) for name in LABEL_NAMES}

    assert 0.25 < normal < 0.5
    assert all(0.02 < p < 0.35 for p in counts.values()), counts


def test_ensure_reuses_a_complete_folder(tmp_path):
    first = ensure_synthcxr(tmp_path, n=6, seed=0, size=64, progress=False)
    stamp = (first / "images.npy").stat().st_mtime_ns
    second = ensure_synthcxr(tmp_path, n=6, seed=0, size=64, progress=False)

    assert first == second == synthcxr_folder(tmp_path, 6, 0, 64)
    assert (second / "images.npy").stat().st_mtime_ns == stamp
