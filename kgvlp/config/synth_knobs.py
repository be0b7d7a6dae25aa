"""The ranges of SynthCXR's difficulty knobs (schema.SynthConfig), checked wherever knobs
are given: an experiment's data.synth, a grid's eval.synth, ``kgvlp data synth --knob``.
Kept apart from the loader so the data package can check knobs without importing it."""
from __future__ import annotations

from omegaconf import OmegaConf

# key → (low, high); high None = no upper bound
SYNTH_RANGES = {"contrast": (0.0, None), "finding_size": (0.1, 3.0), "prevalence": (0.0, None),
                "max_findings": (0, None), "location_spread": (0.0, 1.0), "pose_jitter": (0.0, None),
                "paraphrase": (0.0, 1.0), "negation_rate": (0.0, 1.0), "hedge_rate": (0.0, None),
                "label_noise": (0.0, 0.5)}


def synth_range_problem(knobs, where: str = "data.synth") -> str | None:
    """The first knob of ``knobs`` (a DictConfig or mapping) outside its range, as a message; None if all fit."""
    for key, (low, high) in SYNTH_RANGES.items():
        value = OmegaConf.select(knobs, key) if not isinstance(knobs, dict) else knobs.get(key)
        if value is None:
            continue
        if value < low or (high is not None and value > high):
            bound = f"in [{low}, {high}]" if high is not None else f"≥ {low}"
            return f"config key '{where}.{key}': expected a value {bound}, got {value}"
    return None
