"""SynthCXR's findings: names, UMLS CUIs, and how often they occur together.

CUIs are the ones the PadChest labels CSV shipped in torchxrayvision assigns to each
label (``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz``, rows with a single
label), which is also the starting list of the knowledge subset. Where PadChest's CUI is
not the MeSH descriptor's CUI, the MeSH one is kept in ``mesh_cui`` so either can be linked.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kgvlp.config.schema import SynthConfig


@dataclass(frozen=True)
class Finding:
    name: str        # label key, snake_case
    text: str        # plain-text name as a radiologist writes it
    cui: str         # PadChest labels CSV
    mesh_cui: str    # MeSH descriptor's concept (same as cui where they agree)


FINDINGS: tuple[Finding, ...] = (
    Finding("cardiomegaly", "cardiomegaly", "C0018800", "C0018800"),
    Finding("pleural_effusion", "pleural effusion", "C2073625", "C0032227"),
    Finding("pneumothorax", "pneumothorax", "C2073565", "C0032326"),
    Finding("consolidation", "consolidation", "C0521530", "C0521530"),
    Finding("nodule", "nodule", "C0034079", "C0034079"),
    Finding("mass", "pulmonary mass", "C0149726", "C0024109"),
    Finding("atelectasis", "atelectasis", "C0004144", "C0004144"),
    Finding("edema", "pulmonary edema", "C0034063", "C0034063"),
    Finding("support_devices", "support devices", "C0085590", "C0085590"),  # PadChest "catheter"
)
LABEL_NAMES: tuple[str, ...] = tuple(f.name for f in FINDINGS)
LABEL_INDEX = {name: i for i, name in enumerate(LABEL_NAMES)}
# Devices are one label but each has its own PadChest CUI for grounding/knowledge
# (PadChest's "NSG tube" label carries no CUI in the CSV, so none is invented here).
DEVICE_CUIS: dict[str, str | None] = {
    "endotracheal tube": "C0336630",
    "nasogastric tube": None,
    "central venous catheter": "C1145640",
    "pacemaker": "C0030163",
    "chest tube": "C0008034",
}
LOBES = ("right upper lobe", "right middle lobe", "right lower lobe",
         "left upper lobe", "left lower lobe")


@dataclass
class Instance:
    """One drawn finding: what it is and where (sides use the patient's right/left)."""
    finding: str
    side: str | None = None           # right | left | None (midline / bilateral spread)
    lobe: str | None = None
    size: str | None = None           # small | moderate | large, or "1.8 cm"
    detail: dict = field(default_factory=dict)


def sample_study(rng: np.random.Generator, knobs: SynthConfig | None = None) -> list[Instance]:
    """Draw the findings of one study with correlated prevalence.

    Three latent states give co-occurrence: heart failure (cardiomegaly, edema, bilateral
    effusions), intensive care (devices, atelectasis, effusions, pneumothorax) and infection
    (consolidation, parapneumonic effusion). About a third of studies come out normal.
    ``knobs.prevalence`` scales every finding's probability (capped at 1; the latent states
    keep theirs), ``knobs.finding_size`` the nodule/mass diameters, ``knobs.max_findings``
    caps the instances kept (the first drawn). Defaults draw exactly version 1's studies.
    """
    knobs = knobs or SynthConfig()
    scale, size = knobs.prevalence, knobs.finding_size

    def occurs(p: float) -> bool:
        return rng.random() < min(1.0, p * scale)

    chf = rng.random() < 0.16
    icu = rng.random() < 0.22
    infection = rng.random() < 0.16
    out: list[Instance] = []
    if occurs(0.10 + 0.65 * chf):
        out.append(Instance("cardiomegaly", size=str(rng.choice(["mild", "moderate", "marked"],
                                                                p=[0.5, 0.35, 0.15]))))
    if occurs(0.02 + 0.55 * chf + 0.05 * icu):
        out.append(Instance("edema", size=str(rng.choice(["mild", "moderate"]))))
    if occurs(0.06 + 0.45 * chf + 0.12 * icu + 0.2 * infection):
        sides = (["right", "left"] if rng.random() < (0.7 if chf else 0.25)
                 else [str(rng.choice(["right", "left"]))])
        for side in sides:
            out.append(Instance("pleural_effusion", side=side,
                                size=str(rng.choice(["small", "moderate", "large"],
                                                    p=[0.55, 0.33, 0.12]))))
    if occurs(0.05 + 0.6 * infection + 0.08 * icu):
        for lobe in rng.choice(LOBES, size=1 + int(rng.random() < 0.2), replace=False):
            out.append(Instance("consolidation", side=lobe.split()[0], lobe=str(lobe)))
    has_effusion = any(i.finding == "pleural_effusion" for i in out)
    if occurs(0.07 + 0.12 * icu + 0.25 * has_effusion):
        side = str(rng.choice(["right", "left"]))
        out.append(Instance("atelectasis", side=side, lobe=f"{side} lower lobe"))
    if occurs(0.035 + 0.07 * icu):
        out.append(Instance("pneumothorax", side=str(rng.choice(["right", "left"])),
                            size=str(rng.choice(["small", "moderate", "large"], p=[0.5, 0.35, 0.15])),
                            detail={"apical": bool(rng.random() < 0.6)}))
    if occurs(0.07):
        lobe = str(rng.choice(LOBES))
        out.append(Instance("nodule", side=lobe.split()[0], lobe=lobe,
                            size=f"{rng.uniform(0.8, 2.2) * size:.1f} cm"))
    if occurs(0.035):
        lobe = str(rng.choice(LOBES))
        out.append(Instance("mass", side=lobe.split()[0], lobe=lobe,
                            size=f"{rng.uniform(3.2, 6.0) * size:.1f} cm"))
    if occurs(0.04 + 0.7 * icu):
        devices = ["endotracheal tube", "nasogastric tube", "central venous catheter",
                   "pacemaker", "chest tube"]
        p = np.array([0.35, 0.25, 0.25, 0.1, 0.05])
        for device in rng.choice(devices, size=1 + int(rng.random() < 0.45), replace=False, p=p):
            side = str(rng.choice(["right", "left"])) if device in ("central venous catheter", "chest tube") else None
            out.append(Instance("support_devices", side=side, detail={"device": str(device)}))
    return out if knobs.max_findings is None else out[: knobs.max_findings]
