"""``kgvlp eval --protocol``: the split lists kgvlp rebuilds equal, ID for ID and in order,
the lists the official MGCA / PRIOR code produced on the same fixture datasets
(tests/eval/data/protocol_fixtures/official_ids.json, written by tools/official_splits.py),
and every result row and table carries the protocol, split hash, seeds, config hash and
kgvlp version + commit."""
import json
from pathlib import Path

import numpy as np
import pytest

import protocol_layouts as layouts
from kgvlp.data.readers.common import LayoutError
from kgvlp.eval.protocols import ProtocolOptions, SplitManifest, Subset, mgca, prior

OFFICIAL = json.loads((Path(__file__).parent / "data" / "protocol_fixtures" / "official_ids.json").read_text())
SEEDS = tuple(OFFICIAL["fixture"]["seeds"])
FIXTURE_OPTIONS = {"chexpert": {"valid_num": OFFICIAL["fixture"]["chexpert_valid_num"]},
                   "rsna": {"detection_holdout": OFFICIAL["fixture"]["rsna_detection_holdout"]}}


@pytest.fixture(scope="module")
def fixture_data(tmp_path_factory):
    return layouts.write_all(tmp_path_factory.mktemp("protocol_data"))


@pytest.fixture(scope="module")
def mgca_manifests(fixture_data):
    return {(m.dataset, m.task): m for name, build in mgca.BUILDERS.items()
            for m in build(fixture_data[name], seeds=SEEDS, **FIXTURE_OPTIONS.get(name, {}))}


def _subset_key(subset: Subset) -> str:
    return f"{subset.fraction:g}" + ("" if subset.seed is None else f"@{subset.seed}")


def test_the_official_lists_come_from_the_pinned_commits():
    assert OFFICIAL["commits"] == {"mgca": "680fe4a6ee0cc454ab58fd1a8b28fee81c03d742",
                                   "prior": "086bf2e0d379d7dacc47a6ad738ffabc1ad6e25f"}


@pytest.mark.parametrize("key", sorted(OFFICIAL["lists"]["mgca"]))
def test_mgca_splits_and_fractions_equal_the_official_code(mgca_manifests, key):
    dataset, task = key.split("/")
    official = OFFICIAL["lists"]["mgca"][key]
    manifest = mgca_manifests[(dataset, task)]

    assert manifest.splits == official["splits"]
    assert {_subset_key(s): s.ids for s in manifest.subsets} == official["subsets"]


def test_every_mgca_dataset_and_task_has_an_official_list(mgca_manifests):
    assert {f"{d}/{t}" for d, t in mgca_manifests} == set(OFFICIAL["lists"]["mgca"])
    assert {d for d, _ in mgca_manifests} == set(mgca.DATASETS)


def test_prior_5x200_is_the_official_list_in_key_order(fixture_data):
    (manifest,) = prior.chexpert_5x200(fixture_data["prior_5x200"])

    assert manifest.splits == OFFICIAL["lists"]["prior"]["chexpert_5x200/zero_shot"]["splits"]


def test_detection_subsets_are_the_trainers_second_draw(mgca_manifests):
    """The scripts build the train set twice (step count, then fit); the first draw is not what trains."""
    manifest = mgca_manifests[("object_cxr", "detection")]
    train = np.asarray(manifest.splits["train"], dtype=object)
    first = list(train[np.random.RandomState(42).choice(len(train), int(0.1 * len(train)), replace=False)])

    assert first != manifest.subset(0.1, 42)
    assert manifest.subset(0.1, 42) != manifest.subset(0.1, 0)   # seed-dependent, unlike classification


def test_classification_subsets_ignore_the_seed(mgca_manifests):
    manifest = mgca_manifests[("rsna", "classification")]
    assert manifest.subset(0.1, 42) == manifest.subset(0.1, 7)


def test_chexpert_keeps_the_official_train_val_overlap(mgca_manifests):
    manifest = mgca_manifests[("chexpert", "classification")]
    overlap = set(manifest.splits["train"]) & set(manifest.splits["val"])
    assert overlap and any(f"{len(overlap)} frontal images are in both" in n for n in manifest.notes)


def test_manifest_holds_ids_only_and_its_hash_follows_them(tmp_path, mgca_manifests):
    manifest = mgca_manifests[("covidx", "classification")]
    path = manifest.write(tmp_path)
    stored = json.loads(path.read_text())

    assert set(stored) == {"protocol", "dataset", "task", "splits", "subsets", "class_names", "sources", "notes",
                           "content_hash"}
    assert SplitManifest.read(path).content_hash == manifest.content_hash
    stored["splits"]["test"] = stored["splits"]["test"][1:]
    path.write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="was edited"):
        SplitManifest.read(path)


def test_a_missing_layout_file_is_named(tmp_path):
    with pytest.raises(LayoutError, match="stage_2_train_labels.csv"):
        mgca.rsna(tmp_path)


def test_too_few_single_finding_images_for_5x200_is_explained(tmp_path):
    folder = tmp_path / "CheXpert-v1.0-small"
    folder.mkdir()
    header = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(layouts.CHEXPERT_LABELS)
    (folder / "train.csv").write_text(header + "\n")
    (folder / "valid.csv").write_text(header + "\n")
    with pytest.raises(LayoutError, match="5×200 set needs 200"):
        mgca.chexpert(folder)


def test_cli_protocol_run_writes_the_official_lists_and_tagged_tables(tmp_path):
    """End to end through ``python -m kgvlp.cli eval RUN --protocol mgca`` on two fixture
    datasets with images (the other three are checked above without images: CheXpert needs
    ≥ 1,000 images for 5×200)."""
    from eval_fixtures import make_tiny_model
    from test_loading import write_run
    from kgvlp.cli import main

    data = tmp_path / "data"
    roots = {"covidx": layouts.write_covidx(data, images=True), "object_cxr": layouts.write_object_cxr(data, images=True)}
    run = write_run(tmp_path / "run", make_tiny_model())
    out = tmp_path / "out"

    code = main(["eval", str(run), "--protocol", "mgca", *[a for k, v in roots.items() for a in ("--dataset", f"{k}={v}")],
                 "--seeds", "42", "--fractions", "0.1", "--max-epochs", "1", "--no-baselines", "--device", "cpu", "--no-progress",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])

    assert code == 0
    for key in ("covidx/classification", "object_cxr/detection"):
        dataset, task = key.split("/")
        manifest = SplitManifest.read(out / "manifests" / f"mgca_{dataset}_{task}.manifest.json")
        assert manifest.splits == OFFICIAL["lists"]["mgca"][key]["splits"]
        official_subset = OFFICIAL["lists"]["mgca"][key]["subsets"]["0.1" if dataset == "covidx" else "0.1@42"]
        assert manifest.subset(0.1, 42) == official_subset
        result = json.loads((out / f"mgca_{dataset}_{task}.json").read_text())
        assert result["rows"], result.get("skipped")
        for row in result["rows"]:
            assert row["protocol"] == "mgca" and row["split_hash"] == manifest.content_hash
            assert row["seeds"] == "42" and len(row["config_hash"]) == 64 and row["kgvlp_version"] and row["commit"]
        table = (out / f"mgca_{dataset}_{task}.md").read_text()
        assert f"split manifest sha256 {manifest.content_hash[:16]}" in table and "seeds [42]" in table


def test_prior_zero_shot_runs_on_its_list_and_says_what_is_not_released(tmp_path):
    from eval_fixtures import make_tiny_model
    from kgvlp.eval.protocols import evaluate_protocol

    data = tmp_path / "data"
    chexpert = layouts.write_chexpert(data, images=False)
    json_path = layouts.write_prior_5x200(data, chexpert)
    listed = [e["image_path"] for e in json.loads(json_path.read_text()).values()]
    for n, relative in enumerate(listed[:-3]):     # 3 listed images unreadable: skipped and counted
        layouts._image(chexpert / relative, n)

    results = evaluate_protocol(make_tiny_model(), "prior", {"chexpert_5x200": json_path, "chexpert": chexpert},
                                tmp_path / "out", baselines=False, device="cpu", progress=False,
                                options=ProtocolOptions(cache_dir=str(tmp_path / "cache")))

    zero_shot, supervised = results
    assert [r["model"] for r in zero_shot.rows] == ["trained"]
    assert {"accuracy", "precision", "recall", "f1", "kappa", "split_hash", "config_hash"} <= set(zero_shot.rows[0])
    assert any("{'test': 3}" in n for n in zero_shot.notes)
    assert "not released" in supervised.skipped


def test_rsna_segmentation_masks_are_the_filled_boxes():
    import torch

    from kgvlp.eval.protocols.binding import box_masks

    masks = box_masks(torch.tensor([[1.2, 2.0, 3.5, 4.0], [float("nan")] * 4]), size=6)

    assert masks[0].nonzero().tolist() == [[y, x] for y in (2, 3) for x in (1, 2, 3)]
    assert not masks[1].any()
