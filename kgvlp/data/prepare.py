"""``kgvlp data prepare``: decode a real dataset once into an image cache.

Each image is decoded (PIL; DICOM through pydicom), converted to grey, resized so its long
side is ``size`` and zero-padded to a square (MGCA: 256), and written into the cache with
its report, labels and annotations (boxes scaled, SIIM RLE masks decoded and resized).
Rows already in the cache are skipped, so an interrupted run resumes; unreadable images
(truncated, corrupt, decompression bombs) and malformed reports are skipped, counted and
listed in ``skipped.txt`` with the reason; reports with invalid UTF-8 are kept, decoded
with replacement, counted and listed in ``replaced.txt``.
"""
from __future__ import annotations

import os
import warnings
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from kgvlp.data.cache import CacheWriter
from kgvlp.data.readers import READERS
from kgvlp.data.readers.common import Record, rle_decode_siim
from kgvlp.data.text import split_sentences
from kgvlp.data.transforms import resize_pad_numpy


def decode_image(path: str | Path) -> np.ndarray:
    """Any radiograph file → uint8 (H, W) grey, bright = dense."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        import pydicom  # optional: only DICOM sources (RSNA, SIIM) need it
        ds = pydicom.dcmread(path)
        _refuse_bomb(int(getattr(ds, "Rows", 0)) * int(getattr(ds, "Columns", 0))
                     * int(getattr(ds, "NumberOfFrames", 1) or 1))
        pixels = ds.pixel_array.astype(np.float32)
        if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
            pixels = pixels.max() - pixels
    else:
        from PIL import Image
        with warnings.catch_warnings():   # PIL warns (and decodes) up to 2× its pixel limit
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I", "F"):
                pixels = np.asarray(im, dtype=np.float32)
            else:
                return np.asarray(im.convert("L"), dtype=np.uint8)
    lo, hi = float(pixels.min()), float(pixels.max())
    return ((pixels - lo) / max(hi - lo, 1e-6) * 255 + 0.5).astype(np.uint8)


def _refuse_bomb(pixels: int) -> None:
    """The same pixel limit for DICOM as PIL applies to other images (89 M pixels)."""
    from PIL import Image
    if Image.MAX_IMAGE_PIXELS and pixels > Image.MAX_IMAGE_PIXELS:
        raise ValueError(f"image of {pixels} pixels exceeds the limit of {Image.MAX_IMAGE_PIXELS} "
                         "(a decompression bomb, or not a radiograph)")


def _encode(args):
    row, record, size = args
    try:
        source = decode_image(record.image_path)
    except Exception as error:  # any decoder failure: skip and report, never crash the run
        return row, None, None, f"{record.image_path}\t{type(error).__name__}: {error}"
    h, w = source.shape
    scale = size / max(h, w)
    image = resize_pad_numpy(source, size)
    instances, masks = [], []
    for inst in record.instances:
        box = [round(v * scale, 2) for v in inst["box"]] if inst.get("box") else None
        mask = None
        if inst.get("rle"):
            full = rle_decode_siim(inst["rle"], w, h)
            mask = resize_pad_numpy(full.astype(np.uint8) * 255, size) > 127
            ys, xs = np.nonzero(mask)
            box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else box
        instances.append({k: v for k, v in inst.items() if k not in ("rle",)} | {"box": box})
        masks.append(mask)
    meta = {"id": record.id, "split": record.split, "findings": record.findings,
            "impression": record.impression, "report": record.report, "labels": record.labels,
            "instances": instances, "source": str(record.image_path), "source_size": [h, w],
            "sentences": split_sentences("\n".join(p for p in (record.findings, record.impression) if p)
                                         or record.report), **record.extra}
    return row, image, (meta, masks), None


def prepare(dataset: str, root: str | Path, out: str | Path, size: int = 256, workers: int | None = None,
            progress: bool = True, limit: int | None = None, **options) -> dict:
    """Build (or resume) the cache of ``dataset`` read from ``root``; returns counts."""
    if dataset not in READERS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(READERS)}")
    result = READERS[dataset](root, **options)
    records: list[Record] = result.records[:limit] if limit else result.records
    info = {"dataset": dataset, "source_root": str(root), "label_names": result.label_names,
            "label_cuis": result.label_cuis, **result.info}
    writer = CacheWriter(out, len(records), size, info)
    for entry in result.skipped_reports:
        writer.skip(*entry.split("\t", 1))
    if result.replaced_reports:
        with open(Path(out) / "replaced.txt", "w") as listing:
            listing.write("".join(entry + "\n" for entry in result.replaced_reports))
    todo = [(row, rec, size) for row, rec in enumerate(records) if row not in writer.done]
    from kgvlp.progress import counter
    bar = counter(len(records), f"prepare {dataset}", initial=len(records) - len(todo), enabled=progress)
    workers = workers or min(len(os.sched_getaffinity(0)), 16)
    skipped = 0

    def consume(results):
        nonlocal skipped
        for k, (row, image, payload, error) in enumerate(results):
            if error is not None:
                writer.skip(*error.split("\t", 1))
                skipped += 1
            else:
                writer.put(row, image, *payload)
            if k % 256 == 255:
                writer.flush()
            bar.update(1)

    try:
        if workers > 1 and len(todo) > 16:
            with get_context("fork").Pool(workers) as pool:
                consume(pool.imap_unordered(_encode, todo, chunksize=8))
        else:
            consume(map(_encode, todo))
    except BaseException:   # interrupted: keep what was written for the resume, close the files
        writer.abandon()
        raise
    finally:
        bar.close()
    writer.close()
    return {"records": len(records), "written": len(records) - skipped, "skipped": skipped,
            "skipped_reports": len(result.skipped_reports), "replaced_reports": len(result.replaced_reports),
            "out": str(out)}
