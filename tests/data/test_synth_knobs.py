"""SynthCXR's difficulty knobs (data.synth): each changes what it names, the defaults change nothing."""
import hashlib
import json

import numpy as np
import pytest

from kgvlp.config import ConfigError, load_experiment
from kgvlp.config.schema import SynthConfig
from kgvlp.data.synth.findings import LABEL_INDEX, Instance, sample_study
from kgvlp.data.synth.generate import ensure_synthcxr, make_study, synthcxr_folder
from kgvlp.data.synth.render import render
from kgvlp.data.synth.reports import write_report

# sha256 of the images and reports of studies 0–3 (seed 0, 64 px) drawn by generator
# version 1 before the knobs existed: the defaults must keep every cached SynthCXR valid.
VERSION_1_FINGERPRINT = "d2f7c850f3b3bf57"


def _fingerprint(knobs=None) -> str:
    digest = hashlib.sha256()
    for index in range(4):
        image, _, meta = make_study(index, 0, 64, knobs)
        digest.update(image.tobytes())
        digest.update(meta["report"].encode())
    return digest.hexdigest()[:16]


def test_default_knobs_draw_version_1_studies_bit_for_bit():
    assert _fingerprint() == _fingerprint(SynthConfig()) == VERSION_1_FINGERPRINT


def _contrast_inside_mask(contrast: float) -> float:
    rng = np.random.default_rng(7)
    image, (mask,) = render(rng, [Instance("mass", side="right", lobe="right lower lobe", size="5.0 cm")], 128,
                            SynthConfig(contrast=contrast))
    return float(image[mask].mean()) - float(image[~mask].mean())


def test_contrast_scales_how_much_a_finding_stands_out():
    assert _contrast_inside_mask(0.0) < _contrast_inside_mask(0.5) < _contrast_inside_mask(1.0)


def test_finding_size_scales_nodules_and_diffuse_findings():
    def area(finding, size, factor):
        inst = Instance(finding, side="right", lobe="right lower lobe", size=size)
        _, (mask,) = render(np.random.default_rng(3), [inst], 128, SynthConfig(finding_size=factor))
        return int(mask.sum())

    assert area("pleural_effusion", "small", 0.5) < area("pleural_effusion", "small", 1.0) \
        < area("pleural_effusion", "small", 2.0)
    assert area("atelectasis", None, 0.5) < area("atelectasis", None, 2.0)
    sizes = [float(inst.size.split()[0]) for seed in range(3000)
             for inst in sample_study(np.random.default_rng(seed), SynthConfig(finding_size=2.0))
             if inst.finding == "nodule"]
    assert sizes and min(sizes) >= 1.6 and max(sizes) <= 4.4   # 0.8–2.2 cm doubled


def test_prevalence_and_max_findings_set_how_many_findings_a_study_has():
    def mean_count(**knobs):
        return np.mean([len(sample_study(np.random.default_rng(s), SynthConfig(**knobs))) for s in range(400)])

    assert mean_count(prevalence=0.0) == 0
    assert mean_count(prevalence=0.5) < mean_count() < mean_count(prevalence=2.0)
    assert max(len(sample_study(np.random.default_rng(s), SynthConfig(prevalence=3.0, max_findings=2)))
               for s in range(200)) == 2


def _nodule_centres(spread: float) -> np.ndarray:
    centres = []
    for seed in range(40):
        inst = Instance("nodule", side="right", lobe="right lower lobe", size="1.5 cm")
        _, (mask,) = render(np.random.default_rng(seed), [inst], 96,
                            SynthConfig(location_spread=spread, pose_jitter=0.0))
        ys, xs = np.nonzero(mask)
        centres.append((xs.mean(), ys.mean()))
    return np.array(centres)


def test_location_spread_zero_puts_a_focal_finding_at_its_lobe_centre():
    assert _nodule_centres(0.0).std(axis=0).sum() < 0.5 * _nodule_centres(1.0).std(axis=0).sum()


def _reports(n: int = 150, **knobs):
    out = []
    for seed in range(n):
        rng = np.random.default_rng(seed)
        instances = sample_study(rng)
        out.append(write_report(rng, instances, SynthConfig(**knobs), np.random.default_rng([seed, 2])))
    return out


def test_paraphrase_zero_writes_each_sentence_one_way():
    normal = lambda **k: {f for f, i, m in _reports(**k) if not any(not x.negated for x in m)}  # noqa: E731
    assert len(normal(paraphrase=0.0)) < len(normal()) / 2


def test_negation_and_hedge_rates_control_negated_and_hedged_mentions():
    def share(kind, **knobs):
        mentions = [m for _, _, ms in _reports(**knobs) for m in ms]
        return np.mean([getattr(m, kind) for m in mentions])

    assert share("negated", negation_rate=0.0) == 0 < share("negated", negation_rate=0.5) < share("negated")
    assert share("uncertain", hedge_rate=0.0) == 0 < share("uncertain") < share("uncertain", hedge_rate=2.5)


def test_omitted_findings_are_never_named_but_stay_in_images_and_labels():
    knobs = SynthConfig(omit_from_reports=["pneumothorax", "nodule"])
    studies = [make_study(i, 0, 64, knobs)[2] for i in range(300)]
    positives = [m for m in studies if m["labels"][LABEL_INDEX["pneumothorax"]] == 1]

    assert positives and all(any(i["finding"] == "pneumothorax" for i in m["instances"]) for m in positives)
    for meta in studies:
        assert not {"pneumothorax", "nodule"} & {m["finding"] for m in meta["mentions"]}
        assert "pneumothorax" not in meta["report"].lower() and "nodul" not in meta["report"].lower()


def test_label_noise_flips_stored_labels_and_keeps_the_true_ones():
    studies = [make_study(i, 0, 32, SynthConfig(label_noise=0.2))[2] for i in range(200)]
    flips = np.array([np.array(m["labels"]) != np.array(m["labels_clean"]) for m in studies])

    assert 0.15 < flips.mean() < 0.25
    assert all(m["labels_clean"][LABEL_INDEX[i["finding"]]] == 1 for m in studies for i in m["instances"])


def test_knobs_name_their_own_cache_folder(tmp_path):
    default = synthcxr_folder(tmp_path, 6, 0, 32, SynthConfig())
    harder = synthcxr_folder(tmp_path, 6, 0, 32, SynthConfig(contrast=0.5))

    assert default == synthcxr_folder(tmp_path, 6, 0, 32) and default.name == "synthcxr-v1-n6-s32-seed0"
    assert harder != default and harder.name.startswith(default.name + "-k")
    folder = ensure_synthcxr(tmp_path, 6, 0, 32, progress=False, knobs=SynthConfig(contrast=0.5))
    assert folder == harder and json.loads((folder / "info.json").read_text())["difficulty"] == {"contrast": 0.5}


@pytest.mark.parametrize("override, message", [
    ("data.synth.paraphrase=1.5", "'data.synth.paraphrase': expected a value in [0.0, 1.0], got 1.5"),
    ("data.synth.contrst=0.5", "did you mean 'contrast'?"),
    ("data.synth.omit_from_reports=[nodul]", "expected one of ['cardiomegaly'"),
])
def test_bad_knobs_fail_at_load_naming_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_experiment(None, [override])
    assert message in str(err.value)
