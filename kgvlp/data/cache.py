"""The image cache: one memory-mapped uint8 image array plus a metadata index.

Layout of a cache folder (written by ``kgvlp data synth`` and ``kgvlp data prepare``)::

    info.json     {"format": "kgvlp-image-cache", "version", "dataset", "n", "image_size",
                   "label_names", "label_cuis", "complete", ...}
    images.npy    (N, S, S) uint8, grey, long side resized to S and zero-padded, row = sample
    meta.jsonl    one JSON object per row, in row order: "row", "id", "split", "findings",
                  "impression", "report", "labels" (list[float], -1 = uncertain/unknown),
                  "instances" ([{"finding", "cui", "box": [x0, y0, x1, y1] (pixels of the
                  cache image), "mask": row in masks.bin or null, ...}]), "mentions", "source"
    masks.bin     (M, ceil(S*S/8)) uint8: instance masks as np.packbits rows (optional)
    skipped.txt   source files that could not be decoded, one per line with the reason

Every loader worker memory-maps the same file, so random reads cost one page fault each
and nothing is decoded during training. The writer is resumable: rows already listed in
``meta.jsonl`` are skipped on a second run, and the folder is only marked complete (the
``complete`` flag) once every row is in.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

FORMAT = "kgvlp-image-cache"
VERSION = 1


class CacheError(ValueError):
    """A folder that is not a complete, readable image cache; the message names the file."""


def _read_info(path: Path) -> dict:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CacheError(f"{path}: not the JSON info file of a kgvlp image cache ({err})") from None
    if not isinstance(info, dict):
        raise CacheError(f"{path}: expected a JSON object, got {type(info).__name__}")
    return info


def is_cache(folder: str | os.PathLike) -> bool:
    info = Path(folder) / "info.json"
    return info.is_file() and _read_info(info).get("format") == FORMAT


class CacheWriter:
    """Writes rows in any order; safe to re-open after an interruption (``resume``)."""

    def __init__(self, folder: str | os.PathLike, n: int, image_size: int, info: dict):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.image_size = image_size
        self.mask_bytes = (image_size * image_size + 7) // 8
        self.info = {"format": FORMAT, "version": VERSION, "n": n, "image_size": image_size,
                     "mask_bytes": self.mask_bytes, "complete": False, **info}
        images = self.folder / "images.npy"
        if images.exists():
            self.images = np.load(images, mmap_mode="r+")
            if self.images.shape != (n, image_size, image_size):
                raise ValueError(f"{images} has shape {self.images.shape}, expected "
                                 f"{(n, image_size, image_size)}; remove the folder to start over")
        else:
            self.images = np.lib.format.open_memmap(images, mode="w+", dtype=np.uint8,
                                                    shape=(n, image_size, image_size))
        self.done: set[int] = set()
        self.n_masks = 0
        meta_path = self.folder / "meta.partial.jsonl"
        good = []
        if meta_path.exists():
            for line in meta_path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line cut by the interruption: everything after it is redone
                good.append(line)
                self.done.add(row["row"])
                for inst in row.get("instances", []):
                    if inst.get("mask") is not None:
                        self.n_masks = max(self.n_masks, inst["mask"] + 1)
            meta_path.write_text("".join(line + "\n" for line in good))
        masks_path = self.folder / "masks.bin"
        if masks_path.exists():
            os.truncate(masks_path, self.n_masks * self.mask_bytes)
        self._meta = open(meta_path, "a")
        self._masks = open(masks_path, "ab")
        self.skipped: list[str] = []

    def put(self, row: int, image: np.ndarray, meta: dict, masks: list[np.ndarray | None] = ()) -> None:
        """Store one sample; ``masks[i]`` (bool (S, S) or packed bytes) belongs to meta["instances"][i]."""
        self.images[row] = image
        for inst, mask in zip(meta.get("instances", []), masks):
            if mask is None:
                inst["mask"] = None
                continue
            packed = mask if mask.dtype == np.uint8 and mask.ndim == 1 else np.packbits(mask.reshape(-1))
            self._masks.write(packed.tobytes())
            inst["mask"] = self.n_masks
            self.n_masks += 1
        self._meta.write(json.dumps({"row": row, **meta}) + "\n")
        self.done.add(row)

    def skip(self, source: str, reason: str) -> None:
        self.skipped.append(f"{source}\t{reason}")

    def flush(self) -> None:
        self.images.flush()
        self._meta.flush()
        self._masks.flush()

    def abandon(self) -> None:
        """Stop without finishing (an interrupted prepare): what was written stays on disk,
        flushed, for the next run to resume from; the files are closed."""
        self.flush()
        self._meta.close()
        self._masks.close()

    def close(self) -> None:
        """Finish: sort the index by row, write info.json (complete) and the skip report.

        Rows never ``put`` (unreadable sources) stay zero in images.npy and are absent from
        meta.jsonl, so readers never see them.
        """
        self.flush()
        self._meta.close()
        self._masks.close()
        rows = [json.loads(line) for line in (self.folder / "meta.partial.jsonl").read_text().splitlines()]
        rows.sort(key=lambda r: r["row"])
        with open(self.folder / "meta.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        (self.folder / "meta.partial.jsonl").unlink()
        if self.skipped:
            with open(self.folder / "skipped.txt", "a") as f:
                f.write("".join(s + "\n" for s in self.skipped))
        self.info.update(complete=True, n=len(rows), n_masks=self.n_masks)
        (self.folder / "info.json").write_text(json.dumps(self.info, indent=1))
        del self.images


def _read_meta(path: Path) -> list[dict]:
    if not path.is_file():
        raise CacheError(f"{path} not found: a complete kgvlp image cache holds meta.jsonl beside info.json")
    rows = []
    with open(path, encoding="utf-8", errors="strict") as lines:
        try:
            for number, line in enumerate(lines, 1):
                rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise CacheError(f"{path}, line {number}: not a JSON row ({err.msg})") from None
        except UnicodeDecodeError as err:
            raise CacheError(f"{path}, line {len(rows) + 1}: not UTF-8 ({err.reason})") from None
    return rows


class ImageCache:
    """Read side. Picklable: the memory maps are opened lazily in each loader worker."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        info_path = self.folder / "info.json"
        if not info_path.is_file():
            raise FileNotFoundError(
                f"{info_path} not found: a kgvlp image cache folder holds info.json, images.npy "
                "and meta.jsonl (make one with `kgvlp data prepare` or `kgvlp data synth`)")
        self.info = _read_info(info_path)
        if self.info.get("format") != FORMAT or not self.info.get("complete"):
            raise CacheError(f"{self.folder} is not a complete kgvlp image cache "
                             f"(info.json: format={self.info.get('format')!r}, complete={self.info.get('complete')})")
        self.meta = _read_meta(self.folder / "meta.jsonl")
        self.image_size = int(self.info["image_size"])
        self.label_names = list(self.info.get("label_names", []))
        self._images = None
        self._masks = None

    def __len__(self) -> int:
        return len(self.meta)

    def __getstate__(self):
        return {**self.__dict__, "_images": None, "_masks": None}

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            path = self.folder / "images.npy"
            try:   # allow_pickle stays False: an object array is refused, never unpickled
                self._images = np.load(path, mmap_mode="r")
            except ValueError as err:
                raise CacheError(f"{path}: not the uint8 image array of a kgvlp image cache ({err})") from None
        return self._images

    def image(self, row: int) -> np.ndarray:
        """(S, S) uint8 image of a meta row (the row's own array index)."""
        return np.array(self.images[self.meta[row]["row"]])  # a copy: torch wants writable memory

    def mask(self, mask_row: int) -> np.ndarray:
        """(S, S) bool mask stored at ``mask_row`` of masks.bin."""
        if self._masks is None:
            n_bytes = int(self.info["mask_bytes"])
            self._masks = np.memmap(self.folder / "masks.bin", dtype=np.uint8, mode="r",
                                    shape=(int(self.info["n_masks"]), n_bytes))
        size = self.image_size
        return np.unpackbits(self._masks[mask_row])[: size * size].reshape(size, size).astype(bool)

    def rows(self, split: str | None = None) -> list[int]:
        """Meta rows of a split (all rows when ``split`` is None)."""
        return [i for i, m in enumerate(self.meta) if split is None or m.get("split") == split]
