"""Every reader on a tiny fixture written in its dataset's published layout."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kgvlp.data.readers import (LayoutError, read_chexpert, read_covidx, read_iu_xray, read_mimic_cxr,
                                read_object_cxr, read_rsna_pneumonia, read_siim_acr)
from kgvlp.data.readers.common import rle_decode_siim
from kgvlp.data.readers.iu_xray import iter_reports
from kgvlp.data.readers.mimic import CHEXPERT_LABELS, findings_impression


def _png(path: Path, size=(40, 32), value=128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, np.uint8)).save(path)
    return path


MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  Cough.

 FINDINGS:
 
 The lungs are clear.  No pleural effusion or pneumothorax.
 Heart size is normal.

 IMPRESSION:
 
 No acute cardiopulmonary process.
"""


def _mimic(root: Path) -> Path:
    rows = [("d1", 10000032, 50000001, "PA", "train"), ("d2", 10000032, 50000001, "LATERAL", "train"),
            ("d3", 10000032, 50000001, "AP", "train"), ("d4", 11000001, 50000002, "AP", "validate"),
            ("d5", 11000002, 50000003, "PA", "test")]
    (root).mkdir(parents=True, exist_ok=True)
    (root / "mimic-cxr-2.0.0-metadata.csv").write_text(
        "dicom_id,subject_id,study_id,ViewPosition\n" + "".join(f"{d},{p},{s},{v}\n" for d, p, s, v, _ in rows))
    (root / "mimic-cxr-2.0.0-split.csv").write_text(
        "dicom_id,study_id,subject_id,split\n" + "".join(f"{d},{s},{p},{sp}\n" for d, p, s, _, sp in rows))
    header = "subject_id,study_id," + ",".join(CHEXPERT_LABELS) + "\n"
    values = {50000001: "", 50000002: "1.0", 50000003: "-1.0"}
    (root / "mimic-cxr-2.0.0-chexpert.csv").write_text(header + "".join(
        f"{p},{s}," + ",".join([values[s]] * len(CHEXPERT_LABELS)) + "\n" for p, s in
        [(10000032, 50000001), (11000001, 50000002), (11000002, 50000003)]))
    for d, p, s, _, _ in rows:
        study = root / "files" / f"p{str(p)[:2]}" / f"p{p}" / f"s{s}"
        _png(study / f"{d}.jpg")
        text = MIMIC_REPORT if s != 50000003 else "FINDINGS: Clear.\n IMPRESSION: \n"
        study.with_suffix(".txt").write_text(text)
    return root


def test_mimic_sections_are_extracted():
    findings, impression = findings_impression(MIMIC_REPORT)

    assert findings.startswith("The lungs are clear.") and "Heart size is normal." in findings
    assert impression == "No acute cardiopulmonary process."


def test_mimic_applies_mgca_filters(tmp_path):
    result = read_mimic_cxr(_mimic(tmp_path / "mimic"))
    ids = {r.id: r for r in result.records}

    assert set(ids) == {"d1", "d3", "d4"}  # lateral dropped; d5's report has < 3 words
    assert ids["d4"].split == "val" and ids["d1"].split == "train"
    assert ids["d4"].labels == [1.0] * 14 and ids["d1"].labels == [None] * 14
    assert ids["d1"].image_path.exists()


def test_mimic_prior_keeps_one_frontal_per_study(tmp_path):
    result = read_mimic_cxr(_mimic(tmp_path / "mimic"), one_frontal_per_study=True)

    assert [r.id for r in result.records] == ["d1", "d4"]


def test_missing_column_names_file_and_layout(tmp_path):
    root = _mimic(tmp_path / "mimic")
    (root / "mimic-cxr-2.0.0-metadata.csv").write_text("dicom_id,subject_id,study_id\nd1,1,2\n")

    with pytest.raises(LayoutError, match=r"metadata\.csv lacks column\(s\) \['ViewPosition'\].*Expected layout"):
        read_mimic_cxr(root)


def test_missing_file_names_expected_layout(tmp_path):
    with pytest.raises(LayoutError, match="train.csv.*Expected layout"):
        read_chexpert(tmp_path)


def test_chexpert_keeps_uncertain_labels_and_policy(tmp_path):
    root = tmp_path / "CheXpert-v1.0-small"
    header = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(CHEXPERT_LABELS) + "\n"
    row = lambda p, view, v: f"{p},Female,60,{view},AP," + ",".join([v] * 14) + "\n"  # noqa: E731
    root.mkdir()
    (root / "train.csv").write_text(header + row("CheXpert-v1.0-small/train/patient1/study1/view1_frontal.jpg", "Frontal", "-1.0")
                                    + row("CheXpert-v1.0-small/train/patient1/study1/view2_lateral.jpg", "Lateral", "1.0"))
    (root / "valid.csv").write_text(header + row("CheXpert-v1.0-small/valid/patient2/study1/view1_frontal.jpg", "Frontal", "0.0"))
    _png(root / "train/patient1/study1/view1_frontal.jpg")

    result = read_chexpert(root)

    assert [r.split for r in result.records] == ["train", "val"]
    assert result.records[0].labels == [-1.0] * 14 and result.records[0].image_path.exists()
    policy = result.info["uncertain_policy"]
    assert policy[CHEXPERT_LABELS.index("Atelectasis")] == 1.0 and policy[CHEXPERT_LABELS.index("Cardiomegaly")] == 0.0


def test_rsna_groups_boxes_per_patient(tmp_path):
    (tmp_path / "stage_2_train_labels.csv").write_text(
        "patientId,x,y,width,height,Target\na,10,20,30,40,1\na,50,60,5,5,1\nb,,,,,0\n")
    _png(tmp_path / "stage_2_train_images/a.png")
    _png(tmp_path / "stage_2_train_images/b.png")

    result = read_rsna_pneumonia(tmp_path)
    a, b = result.records

    assert a.labels == [1.0] and [i["box"] for i in a.instances] == [[10, 20, 40, 60], [50, 60, 55, 65]]
    assert b.labels == [0.0] and not b.instances and b.image_path.suffix == ".png"


def test_covidx_reads_split_files(tmp_path):
    (tmp_path / "train.txt").write_text("p1 a.png positive cohen\np2 b.png negative rsna\n")
    (tmp_path / "test.txt").write_text("p3 c.png negative rsna\n")

    result = read_covidx(tmp_path)

    assert result.label_names == ["negative", "positive"]
    assert [(r.split, r.labels) for r in result.records] == [("train", [0.0, 1.0]), ("train", [1.0, 0.0]),
                                                             ("test", [1.0, 0.0])]


def test_siim_rle_decodes_column_major():
    mask = rle_decode_siim("5 3 4 2", width=4, height=4)  # pixels 5-7 and 12-13 in column-major order

    assert mask.sum() == 5
    assert mask[1, 1] and mask[2, 1] and mask[3, 1] and mask[0, 3] and mask[1, 3]


def test_siim_reader_and_shipped_rle_format(tmp_path):
    (tmp_path / "train-rle.csv").write_text("ImageId, EncodedPixels\nimg1, 5 3 4 2\nimg2, -1\n")
    _png(tmp_path / "dicom-images-train/s/img1.png", (4, 4))
    _png(tmp_path / "dicom-images-train/s/img2.png", (4, 4))

    result = read_siim_acr(tmp_path)

    assert [r.labels for r in result.records] == [[1.0], [0.0]]
    assert result.records[0].instances[0]["rle"] == "5 3 4 2"


def test_object_cxr_parses_boxes_ellipses_polygons(tmp_path):
    (tmp_path / "train.csv").write_text('image_name,annotation\n1.jpg,"0 10 10 20 30;1 5 5 9 9"\n2.jpg,\n')
    (tmp_path / "dev.csv").write_text('image_name,annotation\n3.jpg,"2 1 1 8 2 4 9"\n')

    result = read_object_cxr(tmp_path)

    one, two, three = result.records
    assert [i["box"] for i in one.instances] == [[10, 10, 20, 30], [5, 5, 9, 9]] and one.labels == [1.0]
    assert two.labels == [0.0] and three.split == "val" and three.instances[0]["box"] == [1, 1, 8, 9]


IU_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation><uId id="CXR9"/><MedlineCitation><Article><Abstract>
<AbstractText Label="FINDINGS">Mild cardiomegaly. No pleural effusion.</AbstractText>
<AbstractText Label="IMPRESSION">Cardiomegaly.</AbstractText></Abstract></Article></MedlineCitation>
<MeSH><major>Cardiomegaly/mild</major><automatic>cardiomegaly</automatic></MeSH>
<parentImage id="CXR9_1_IM-0001-1001"/><parentImage id="CXR9_1_IM-0001-2001"/></eCitation>"""


def test_iu_fixture_gives_one_record_per_image(tmp_path):
    (tmp_path / "ecgen-radiology").mkdir()
    (tmp_path / "ecgen-radiology/9.xml").write_text(IU_XML)

    result = read_iu_xray(tmp_path)

    assert [r.id for r in result.records] == ["CXR9_1_IM-0001-1001", "CXR9_1_IM-0001-2001"]
    rec = result.records[0]
    assert rec.findings == "Mild cardiomegaly. No pleural effusion." and rec.impression == "Cardiomegaly."
    assert rec.labels[result.label_names.index("cardiomegaly")] == 1.0
    assert rec.image_path == tmp_path / "NLMCXR_png/CXR9_1_IM-0001-1001.png"


def test_iu_parses_all_shipped_reports():
    import torchxrayvision
    tgz = Path(torchxrayvision.__file__).parent / "data" / "NLMCXR_reports.tgz"

    reports = list(iter_reports(tgz))

    assert len(reports) == 3955
    assert sum(bool(r.findings) for r in reports) > 3000 and sum(bool(r.impression) for r in reports) > 3900
    assert all(r.mesh_major for r in reports)
