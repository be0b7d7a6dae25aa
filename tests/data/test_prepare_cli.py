import argparse
import json

import numpy as np
from PIL import Image

from kgvlp.config.schema import DataConfig
from kgvlp.data import build_downstream_dataset, build_pretrain_dataset
from kgvlp.data.cache import ImageCache
from kgvlp.data.prepare import prepare


def _siim(root, n=4):
    lines = ["ImageId, EncodedPixels"]
    for k in range(n):
        Image.fromarray(np.full((64, 48), 40 * k, np.uint8)).save(root / f"img{k}.png")
        lines.append(f"img{k}, {'100 20 28 20' if k % 2 else '-1'}")
    (root / "train-rle.csv").write_text("\n".join(lines) + "\n")
    return root


def test_prepare_resizes_pads_and_keeps_masks(tmp_path):
    root = _siim(tmp_path)
    counts = prepare("siim_acr", root, tmp_path / "cache", size=32, workers=1, progress=False)
    cache = ImageCache(tmp_path / "cache")

    assert counts == {"records": 4, "written": 4, "skipped": 0, "skipped_reports": 0, "replaced_reports": 0,
                      "out": str(tmp_path / "cache")}
    assert cache.image(0).shape == (32, 32) and cache.image(0)[:, 24:].max() == 0  # 48 wide → padded right
    positive = next(m for m in cache.meta if m["instances"])
    assert cache.mask(positive["instances"][0]["mask"]).any() and positive["instances"][0]["box"]


def test_corrupt_image_is_skipped_and_listed(tmp_path):
    root = _siim(tmp_path)
    (root / "img2.png").write_bytes(b"not a png")

    counts = prepare("siim_acr", root, tmp_path / "cache", size=32, workers=1, progress=False)

    assert counts["skipped"] == 1 and len(ImageCache(tmp_path / "cache")) == 3
    assert "img2.png" in (tmp_path / "cache" / "skipped.txt").read_text()


def test_prepare_resumes_after_interruption(tmp_path):
    root = _siim(tmp_path)
    from kgvlp.data.cache import CacheWriter
    from kgvlp.data.prepare import _encode
    from kgvlp.data.readers import read_siim_acr
    records = read_siim_acr(root).records
    writer = CacheWriter(tmp_path / "cache", 4, 32, {"label_names": ["pneumothorax"]})
    row, image, (meta, masks), _ = _encode((0, records[0], 32))
    writer.put(row, image, meta, masks)
    writer.abandon()  # … and the process dies here (flushed; abandon also closes the files)

    prepare("siim_acr", root, tmp_path / "cache", size=32, workers=1, progress=False)
    cache = ImageCache(tmp_path / "cache")

    assert [m["row"] for m in cache.meta] == [0, 1, 2, 3]


def test_prepared_cache_feeds_both_datasets(tmp_path):
    prepare("siim_acr", _siim(tmp_path), tmp_path / "cache", size=32, workers=1, progress=False)

    downstream = build_downstream_dataset(tmp_path / "cache", "train", image_size=16)
    item = downstream[0]

    assert item.image.shape == (1, 16, 16) and downstream.label_names == ["pneumothorax"]
    # no reports in SIIM: every pretraining sample is unreadable → None
    pretrain = build_pretrain_dataset(DataConfig(root=str(tmp_path / "cache"), resize=32, image_size=24))
    assert pretrain[0] is None


def test_cli_registers_synth_prepare_show(tmp_path, capsys):
    from kgvlp.data.cli import register
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="data_cmd", required=True))

    args = parser.parse_args(["synth", "--out", str(tmp_path / "s"), "--n", "6", "--size", "64", "--workers", "1"])
    args.func(args)
    args = parser.parse_args(["show", str(tmp_path / "s"), "--n", "2", "--out", str(tmp_path / "g.png")])
    args.func(args)

    assert json.loads((tmp_path / "s" / "info.json").read_text())["n"] == 6
    assert (tmp_path / "g.png").stat().st_size > 1000
