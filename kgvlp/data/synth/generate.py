"""Generate a SynthCXR cache folder (see kgvlp.data.cache for the layout).

Every study is drawn from its own generator seeded by (seed, index), so a study does not
depend on how many workers drew it or on ``n``. Splits are assigned by a seeded
permutation: 60% pretrain, 25% train, 5% val, 10% test.

Difficulty knobs (``kgvlp.config.schema.SynthConfig``, docs/data.md) change what is drawn;
at their defaults every study is exactly version 1's, and any other setting is written to
``info.json`` and named in the folder (``-k<hash>``), so two settings never share a cache.
Draws the knobs add (negation keeping, label flips) come from a second per-study generator,
so a knob changes only what it is about.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from kgvlp.config.schema import SynthConfig
from kgvlp.data.cache import CacheWriter, is_cache
from kgvlp.data.synth.findings import DEVICE_CUIS, FINDINGS, LABEL_INDEX, LABEL_NAMES, sample_study
from kgvlp.data.synth.render import render
from kgvlp.data.synth.reports import write_report

GENERATOR_VERSION = 1
SPLIT_SHARES = (("pretrain", 0.60), ("train", 0.25), ("val", 0.05), ("test", 0.10))
_CUI = {f.name: f.cui for f in FINDINGS}


def split_of(n: int, seed: int) -> list[str]:
    order = np.random.default_rng([seed, 1]).permutation(n)
    splits = [""] * n
    start = 0
    for k, (name, share) in enumerate(SPLIT_SHARES):
        stop = n if k == len(SPLIT_SHARES) - 1 else start + int(round(share * n))
        for i in order[start:stop]:
            splits[i] = name
        start = stop
    return splits


def knob_changes(knobs: SynthConfig | None) -> dict:
    """The knobs that differ from their defaults (what names a non-default cache)."""
    if knobs is None:
        return {}
    defaults = asdict(SynthConfig())
    return {k: v for k, v in asdict(knobs).items() if v != defaults[k]}


def _noisy(labels: list[float], rate: float, rng: np.random.Generator) -> list[float]:
    flips = rng.random(len(labels)) < rate
    return [1.0 - v if flip else v for v, flip in zip(labels, flips)]


def make_study(index: int, seed: int, size: int,
               knobs: SynthConfig | None = None) -> tuple[np.ndarray, list[np.ndarray], dict]:
    """Image, packed instance masks and metadata of study ``index``."""
    knobs = knobs or SynthConfig()
    rng = np.random.default_rng([seed, 0, index])
    knob_rng = np.random.default_rng([seed, 2, index])
    instances = sample_study(rng, knobs)
    image, masks = render(rng, instances, size, knobs)
    findings, impression, mentions = write_report(rng, instances, knobs, knob_rng)
    labels = [0.0] * len(LABEL_NAMES)
    inst_meta = []
    for inst, mask in zip(instances, masks):
        labels[LABEL_INDEX[inst.finding]] = 1.0
        ys, xs = np.nonzero(mask)
        box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else None
        device = inst.detail.get("device")
        inst_meta.append({"finding": inst.finding, "cui": DEVICE_CUIS[device] if device else _CUI[inst.finding],
                          "side": inst.side, "lobe": inst.lobe, "size": inst.size, "device": device, "box": box})
    extra = {}
    if knobs.label_noise > 0:   # the stored labels are flipped; the true ones are kept beside them
        extra = {"labels_clean": labels}
        labels = _noisy(labels, knobs.label_noise, knob_rng)
    meta = {
        "id": f"synthcxr-{seed}-{index:06d}",
        "findings": findings,
        "impression": impression,
        "report": f"FINDINGS: {findings}\n\nIMPRESSION: {impression}",
        "labels": labels,
        "instances": inst_meta,
        "mentions": [{**asdict(m), "cui": _CUI[m.finding]} for m in mentions],
        **extra,
    }
    packed = [np.packbits(m.reshape(-1)) for m in masks]
    return image, packed, meta


def _work(args):
    index, seed, size, knobs = args
    return index, *make_study(index, seed, size, knobs)


def generate_synthcxr(out: str | os.PathLike, n: int, seed: int = 0, size: int = 256,
                      workers: int | None = None, progress: bool = True,
                      knobs: SynthConfig | None = None) -> Path:
    """Write ``n`` studies into ``out`` (resumable: rows already written are kept)."""
    out = Path(out)
    changes = knob_changes(knobs)
    info = {"dataset": "synthcxr", "seed": seed, "generator_version": GENERATOR_VERSION,
            **({"difficulty": changes} if changes else {}),
            "label_names": list(LABEL_NAMES), "label_cuis": [f.cui for f in FINDINGS],
            "label_mesh_cuis": [f.mesh_cui for f in FINDINGS], "device_cuis": DEVICE_CUIS,
            "splits": dict(SPLIT_SHARES)}
    writer = CacheWriter(out, n, size, info)
    splits = split_of(n, seed)
    todo = [(i, seed, size, knobs) for i in range(n) if i not in writer.done]
    workers = workers or min(len(os.sched_getaffinity(0)), 32)
    bar = _progress(len(todo), progress, f"synthcxr n={n}")
    start = time.perf_counter()
    if workers > 1 and len(todo) > 8:
        with get_context("fork").Pool(workers) as pool:
            for index, image, masks, meta in pool.imap_unordered(_work, todo, chunksize=8):
                writer.put(index, image, {**meta, "split": splits[index]}, masks)
                bar.update(1)
    else:
        for args in todo:
            index, image, masks, meta = _work(args)
            writer.put(index, image, {**meta, "split": splits[index]}, masks)
            bar.update(1)
    bar.close()
    writer.info["seconds"] = round(time.perf_counter() - start, 2)
    writer.close()
    return out


def _progress(total: int, enabled: bool, desc: str):
    from kgvlp.progress import counter
    return counter(total, desc, enabled=enabled)


def synthcxr_folder(cache_dir: str | os.PathLike, n: int, seed: int, size: int,
                    knobs: SynthConfig | None = None) -> Path:
    name = f"synthcxr-v{GENERATOR_VERSION}-n{n}-s{size}-seed{seed}"
    changes = knob_changes(knobs)
    if changes:
        name += "-k" + hashlib.sha256(json.dumps(changes, sort_keys=True).encode()).hexdigest()[:10]
    return Path(cache_dir) / name


def ensure_synthcxr(cache_dir: str | os.PathLike, n: int, seed: int, size: int,
                    progress: bool = True, knobs: SynthConfig | None = None) -> Path:
    """The generated folder for these settings, generating it once.

    Safe when several processes (DeepSpeed ranks) call it together: an exclusive lock file
    serialises them, generation goes to a temporary folder that is renamed into place, so
    nobody ever reads a half-written cache.
    """
    final = synthcxr_folder(cache_dir, n, seed, size, knobs)
    if is_cache(final) and _complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(str(final) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (is_cache(final) and _complete(final)):
                tmp = Path(str(final) + ".tmp")  # reused on resume after a crash
                generate_synthcxr(tmp, n, seed, size, progress=progress, knobs=knobs)
                if final.exists():
                    shutil.rmtree(final)
                os.rename(tmp, final)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return final


def _complete(folder: Path) -> bool:
    return bool(json.loads((folder / "info.json").read_text()).get("complete"))
