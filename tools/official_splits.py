"""Run the official MGCA / PRIOR split code on the fixture datasets; write the ID lists it
produces to tests/eval/data/protocol_fixtures/official_ids.json (IDs only, no code).

Not run in CI: it needs checkouts of the official repositories at the pinned commits,
which are never committed here. For example:

    git --git-dir=<MGCA mirror> worktree add --detach /tmp/wt-protocol/MGCA 680fe4a6ee0cc454ab58fd1a8b28fee81c03d742
    mkdir /tmp/wt-protocol/PRIOR && git --git-dir=<PRIOR mirror> archive 086bf2e0d379d7dacc47a6ad738ffabc1ad6e25f \
        codes | tar -x -C /tmp/wt-protocol/PRIOR
    python tools/official_splits.py --mgca /tmp/wt-protocol/MGCA --prior /tmp/wt-protocol/PRIOR

What runs is the official code itself, unmodified: ``mgca/preprocess/{chexpert,rsna,covidx,
siim,object_cxr}.py`` (module level and their functions) and the dataset classes of
``mgca/datasets/*`` (their constructors draw the label fractions), and PRIOR's
``ZeroShotClassificationDataset``. Only module attributes are patched, from outside:
- ``mgca.constants`` paths → the fixture folders, and ``CHEXPERT_VALID_NUM`` → the
  fixture's smaller count (the full-size 5,000 exceeds a fixture);
- in ``mgca.preprocess.rsna``, ``train_test_split`` is wrapped so that the literal
  ``test_size=5337 * 2`` of prepare_detection_data becomes 2 × the fixture's hold-out
  (every other argument, and the call itself, unchanged);
- ``np`` in the two pickle writers (rsna, object_cxr) → numpy whose ``np.array`` turns
  ragged box lists into an object array, as the pinned numpy 1.23 did (1.24+ raises);
- packages the split code imports but never calls (cv2, albumentations, shapely, ipdb)
  are stubbed when not installed.
The trainer's part is reproduced as the scripts do it: ``seed_everything(seed)`` seeds
numpy's global generator, then the train dataset is built twice (``num_training_steps``,
then ``trainer.fit``) and the second build is what trains.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import runpy
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "eval"))
import protocol_layouts as layouts  # noqa: E402

MGCA_COMMIT = "680fe4a6ee0cc454ab58fd1a8b28fee81c03d742"
PRIOR_COMMIT = "086bf2e0d379d7dacc47a6ad738ffabc1ad6e25f"
FRACTIONS = (0.01, 0.1, 1.0)
SEEDS = (42, 0)
OUT = REPO / "tests" / "eval" / "data" / "protocol_fixtures" / "official_ids.json"


class _Anything:
    """Stands in for classes of stubbed packages: accepts any arguments, returns itself."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return self

    def __getattr__(self, name):
        return _Anything()


def _stub_attribute(attr: str):
    """Any public attribute of a stubbed module is a stub class; dunders stay missing, so
    the import system does not take the stub for a package."""
    if attr.startswith("__"):
        raise AttributeError(attr)
    return _Anything


def _stub(name: str) -> None:
    try:
        importlib.import_module(name)
        return
    except ImportError:
        pass
    parts = name.split(".")
    for k in range(1, len(parts) + 1):
        sub = ".".join(parts[:k])
        if sub not in sys.modules:
            module = types.ModuleType(sub)
            module.__getattr__ = _stub_attribute
            sys.modules[sub] = module
            if k > 1:
                setattr(sys.modules[".".join(parts[:k - 1])], parts[k - 1], module)


class _Numpy123:
    """numpy, except that ``array`` of ragged nested sequences gives an object array."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def array(value, *args, **kwargs):
        try:
            return np.array(value, *args, **kwargs)
        except ValueError:
            out = np.empty(len(value), dtype=object)
            out[:] = list(value)
            return out


def commit_of(path: Path) -> str:
    if (path / "COMMIT").exists():
        return (path / "COMMIT").read_text().strip()
    done = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def _patch_constants(data: dict[str, Path], out: Path) -> None:
    import mgca.constants as c
    chexpert, rsna, covidx, siim, obj = (data[k] for k in ("chexpert", "rsna", "covidx", "siim", "object_cxr"))
    values = {
        "CHEXPERT_DATA_DIR": chexpert, "CHEXPERT_ORIGINAL_TRAIN_CSV": chexpert / "train.csv",
        "CHEXPERT_TRAIN_CSV": out / "chexpert_train_split.csv", "CHEXPERT_VALID_CSV": out / "chexpert_valid_split.csv",
        "CHEXPERT_TEST_CSV": chexpert / "valid.csv", "CHEXPERT_5x200": out / "chexpert_5x200.csv",
        "CHEXPERT_VALID_NUM": layouts.CHEXPERT_VALID_NUM,
        "RSNA_DATA_DIR": rsna, "RSNA_ORIGINAL_TRAIN_CSV": rsna / "stage_2_train_labels.csv",
        "RSNA_TRAIN_CSV": out / "rsna_train.csv", "RSNA_VALID_CSV": out / "rsna_val.csv",
        "RSNA_TEST_CSV": out / "rsna_test.csv", "RSNA_DETECTION_TRAIN_PKL": out / "rsna_train.pkl",
        "RSNA_DETECTION_VALID_PKL": out / "rsna_val.pkl", "RSNA_DETECTION_TEST_PKL": out / "rsna_test.pkl",
        "RSNA_IMG_DIR": rsna / "stage_2_train_images",
        "COVIDX_DATA_DIR": covidx, "COVIDX_ORIGINAL_TRAIN_TXT": covidx / "train.txt",
        "COVIDX_ORIGINAL_TEST_TXT": covidx / "test.txt", "COVIDX_TRAIN_CSV": out / "covidx_train.csv",
        "COVIDX_VALID_CSV": out / "covidx_valid.csv", "COVIDX_TEST_CSV": out / "covidx_test.csv",
        "PNEUMOTHORAX_DATA_DIR": siim, "PNEUMOTHORAX_ORIGINAL_TRAIN_CSV": siim / "train-rle.csv",
        "PNEUMOTHORAX_IMG_DIR": siim / "dicom-images-train", "PNEUMOTHORAX_TRAIN_CSV": out / "siim_train.csv",
        "PNEUMOTHORAX_VALID_CSV": out / "siim_valid.csv", "PNEUMOTHORAX_TEST_CSV": out / "siim_test.csv",
        "OBJ_DATA_DIR": obj, "OBJ_ORIGINAL_TRAIN_CSV": obj / "train.csv", "OBJ_ORIGINAL_DEV_CSV": obj / "dev.csv",
        "OBJ_TRAIN_PKL": out / "obj_train.pkl", "OBJ_VALID_PKL": out / "obj_valid.pkl", "OBJ_TEST_PKL": out / "obj_test.pkl",
    }
    for name, value in values.items():
        if not hasattr(c, name):
            raise SystemExit(f"mgca.constants has no {name}: is the checkout at {MGCA_COMMIT}?")
        setattr(c, name, value)


def run_mgca_preprocessing(holdout: int) -> None:
    """Each script as ``python <script>.py`` runs it (module-level seeding included)."""
    runpy.run_module("mgca.preprocess.chexpert", run_name="__main__")
    runpy.run_module("mgca.preprocess.covidx", run_name="__main__")
    runpy.run_module("mgca.preprocess.siim", run_name="__main__")

    rsna = runpy.run_module("mgca.preprocess.rsna", run_name="official_splits")
    split = rsna["train_test_split"]

    def fixture_holdout(*args, test_size=None, **kwargs):
        return split(*args, test_size=2 * holdout if test_size == 5337 * 2 else test_size, **kwargs)
    rsna["train_test_split"], rsna["np"] = fixture_holdout, _Numpy123()
    rsna["preprocess_rsna_data"]()     # the classification CSVs (commented out of its __main__)
    rsna["prepare_detection_data"]()   # its __main__: the detection / segmentation pickles

    obj = runpy.run_module("mgca.preprocess.object_cxr", run_name="official_splits")
    obj["np"] = _Numpy123()
    obj["main"]()


def _frontal_paths(dataset, chexpert_dir: Path) -> list[str]:
    """CheXpertImageDataset rewrites Path to CHEXPERT_DATA_DIR/<path minus its first part>: undo."""
    return [f"{layouts.CHEXPERT_FOLDER}/{Path(p).relative_to(chexpert_dir).as_posix()}" for p in dataset.df["Path"]]


def mgca_lists(data: dict[str, Path]) -> dict:
    from mgca.datasets import classification_dataset as cls
    from mgca.datasets import detection_dataset as det
    from mgca.datasets import segmentation_dataset as seg

    def classification(make, ids):
        splits = {name: ids(make(split=split, data_pct=1.0)) for name, split in
                  (("train", "train"), ("val", "valid"), ("test", "test"))}
        subsets = {f"{f:g}": ids(make(split="train", data_pct=f)) for f in FRACTIONS}
        return {"splits": splits, "subsets": subsets}

    def trainer_built(make, ids, train_ids):
        """``train_ids``: the train split as the preprocessing wrote it (the dataset class
        subsamples even at 100%: SIIM's negatives)."""
        splits = {name: ids(make(split=split, data_pct=1.0)) for name, split in (("val", "valid"), ("test", "test"))}
        splits["train"] = train_ids
        subsets = {}
        for f in FRACTIONS:
            for seed in SEEDS:
                np.random.seed(seed)   # pytorch_lightning.seed_everything(seed) → np.random.seed(seed)
                make(split="train", data_pct=f)            # num_training_steps(trainer, datamodule)
                subsets[f"{f:g}@{seed}"] = ids(make(split="train", data_pct=f))   # trainer.fit
        return {"splits": splits, "subsets": subsets}

    import pickle

    import mgca.constants as c
    import pandas as pd

    def pickled(path):
        with open(path, "rb") as handle:
            return stem(pickle.load(handle)[0])
    stem = lambda names: [str(n)[:-4] if str(n).endswith(".dcm") else str(n) for n in names]  # noqa: E731
    return {
        "chexpert/classification": classification(cls.CheXpertImageDataset,
                                                   lambda d: _frontal_paths(d, data["chexpert"])),
        "rsna/classification": classification(cls.RSNAImageDataset, lambda d: d.df["patientId"].astype(str).tolist()),
        "covidx/classification": classification(cls.COVIDXImageDataset,
                                                lambda d: [Path(p).name for p in d.df["filename"]]),
        "rsna/detection": trainer_built(det.RSNADetectionDataset, lambda d: stem(d.filenames_list),
                                        pickled(c.RSNA_DETECTION_TRAIN_PKL)),
        "rsna/segmentation": trainer_built(seg.RSNASegmentDataset, lambda d: stem(d.filenames),
                                           pickled(c.RSNA_DETECTION_TRAIN_PKL)),
        "object_cxr/detection": trainer_built(det.OBJCXRDetectionDataset, lambda d: stem(d.filenames_list),
                                              pickled(c.OBJ_TRAIN_PKL)),
        "siim/segmentation": trainer_built(seg.SIIMImageDataset, lambda d: [str(i) for i in d.imgids],
                                           [str(i) for i in pd.unique(pd.read_csv(c.PNEUMOTHORAX_TRAIN_CSV)["ImageId"])]),
    }


def prior_lists(prior: Path, json_path: Path) -> dict:
    sys.path.insert(0, str(prior / "codes"))
    from prior.data.zero_shot_classification.base import ZeroShotClassificationDataset
    dataset = ZeroShotClassificationDataset(dataset_path=str(json_path), rate=1.0, transform=[])
    return {"chexpert_5x200/zero_shot": {
        "splits": {"test": [dataset.data_json[i]["image_path"] for i in dataset.id_list]}, "subsets": {}}}


def _one_list_a_line(payload: dict) -> str:
    """JSON with each ID list on one line: small, and a diff shows which list changed."""
    text = json.dumps(payload, indent=1)
    import re
    return re.sub(r"\[\s*([^\[\]{}]*?)\s*\]", lambda m: "[" + ", ".join(
        x.strip() for x in m.group(1).split(",\n")) + "]" if "\n" in m.group(0) else m.group(0), text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mgca", type=Path, required=True, help=f"MGCA checkout at {MGCA_COMMIT}")
    parser.add_argument("--prior", type=Path, help=f"PRIOR checkout (or archive of codes/) at {PRIOR_COMMIT}")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--allow-other-commit", action="store_true")
    args = parser.parse_args(argv)
    commits = {"mgca": commit_of(args.mgca), **({"prior": commit_of(args.prior)} if args.prior else {})}
    pinned = {"mgca": MGCA_COMMIT, "prior": PRIOR_COMMIT}
    wrong = {k: v for k, v in commits.items() if v != pinned[k]}
    if wrong and not args.allow_other_commit:
        raise SystemExit(f"checkouts not at the pinned commits: {wrong} (want {pinned})")
    for name in ("cv2", "albumentations", "albumentations.pytorch", "shapely.geometry",
                 "shapely.algorithms.polylabel", "shapely.ops", "ipdb"):
        _stub(name)
    sys.path.insert(0, str(args.mgca))
    with tempfile.TemporaryDirectory(prefix="official_splits_") as tmp:
        tmp = Path(tmp)
        data = layouts.write_all(tmp / "data", dicom_stubs=True)
        work = tmp / "official"
        work.mkdir()
        _patch_constants(data, work)
        cwd = os.getcwd()
        os.chdir(tmp)   # the scripts print; nothing else is written outside ``work``
        try:
            run_mgca_preprocessing(layouts.RSNA_DETECTION_HOLDOUT)
            lists = {"mgca": mgca_lists(data)}
            if args.prior:
                lists["prior"] = prior_lists(args.prior, data["prior_5x200"])
        finally:
            os.chdir(cwd)
    import pandas
    import sklearn
    payload = {"generated_by": "tools/official_splits.py", "commits": commits,
               "versions": {"numpy": np.__version__, "pandas": pandas.__version__, "sklearn": sklearn.__version__,
                            "python": sys.version.split()[0]},
               "fixture": {"chexpert_valid_num": layouts.CHEXPERT_VALID_NUM,
                           "rsna_detection_holdout": layouts.RSNA_DETECTION_HOLDOUT,
                           "fractions": list(FRACTIONS), "seeds": list(SEEDS)},
               "lists": lists}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(_one_list_a_line(payload) + "\n")
    counts = {p: {k: {s: len(v) for s, v in entry["splits"].items()} for k, entry in d.items()} for p, d in lists.items()}
    print(f"wrote {args.out}: {json.dumps(counts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
