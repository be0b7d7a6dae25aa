"""Benchmark: images/s from the kgvlp image cache vs decoding the source files each time.

Source files are SynthCXR studies upsampled to ``--source-size`` and saved as JPEG (or PNG),
like MIMIC-CXR-JPG's files (which are larger still, ~2500 px, so real gaps are wider). Both
paths end in the same training transform (resize 256 → RandomCrop 224 → normalise) and
go through a DataLoader with ``--workers`` processes.

    python tools/bench_data_cache.py --n 512 --workers 2
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from kgvlp.config.schema import AugmentConfig
from kgvlp.data.cache import CacheWriter, ImageCache
from kgvlp.data.prepare import decode_image
from kgvlp.data.synth.generate import make_study
from kgvlp.data.transforms import ImageTransform, resize_pad_numpy


class SourceFiles(Dataset):
    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(resize_pad_numpy(decode_image(self.paths[i]), 256))


class Cached(Dataset):
    def __init__(self, cache, transform):
        self.cache, self.transform = cache, transform

    def __len__(self):
        return len(self.cache)

    def __getitem__(self, i):
        return self.transform(self.cache.image(i))


def images_per_second(dataset, workers: int, batch: int, epochs: int = 2) -> float:
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                        collate_fn=torch.stack, persistent_workers=workers > 0)
    next(iter(loader))  # start workers before timing
    start, seen = time.perf_counter(), 0
    for _ in range(epochs):
        for images in loader:
            seen += images.shape[0]
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--source-size", type=int, default=1024)
    parser.add_argument("--format", choices=["jpg", "png"], default="jpg")
    parser.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(args.dir or tempfile.mkdtemp(prefix="kgvlp-bench-"))
    sources = work / "sources"
    sources.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(args.n):
        path = sources / f"{i:05d}.{args.format}"
        if not path.exists():
            image = Image.fromarray(make_study(i, 0, 256)[0]).resize((args.source_size, args.source_size), Image.BICUBIC)
            image.save(path, quality=95) if args.format == "jpg" else image.save(path)
        paths.append(path)
    start = time.perf_counter()
    writer = CacheWriter(work / "cache", args.n, 256, {"dataset": "bench"})
    for i, path in enumerate(paths):
        if i not in writer.done:
            writer.put(i, resize_pad_numpy(decode_image(path), 256), {"id": path.name, "split": "pretrain"})
    writer.close()
    build = time.perf_counter() - start
    transform = ImageTransform(256, 224, train=True, augment=AugmentConfig())
    decode = images_per_second(SourceFiles(paths, transform), args.workers, args.batch)
    cached = images_per_second(Cached(ImageCache(work / "cache"), transform), args.workers, args.batch)
    per_worker = cached / max(args.workers, 1)
    print(f"{args.n} {args.format} sources at {args.source_size}px, {args.workers} workers, batch {args.batch}")
    print(f"  cache build (one pass, 1 process): {args.n / build:8.1f} images/s")
    print(f"  decode source files each time:     {decode:8.1f} images/s")
    print(f"  read from the image cache:         {cached:8.1f} images/s   ({cached / decode:.1f}x)")
    print(f"  cache on 16 cores (linear in workers, {per_worker:.0f}/worker): ~{per_worker * 16:.0f} images/s")


if __name__ == "__main__":
    main()
