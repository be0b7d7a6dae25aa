"""Hostile dataset files through ``kgvlp data prepare``: malformed and binary IU XML,
MIMIC reports with invalid UTF-8 or megabytes of text, truncated images and decompression
bombs. Each bad record is skipped (or, for bad bytes in a report, decoded with replacement)
and counted by file name; the rest of the dataset is still prepared."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kgvlp.data.cache import ImageCache
from kgvlp.data.prepare import decode_image, prepare
from kgvlp.data.readers.common import ReportError
from kgvlp.data.readers.iu_xray import iter_reports
from kgvlp.data.readers.mimic import CHEXPERT_LABELS

IU_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation><uId id="{id}"/><MedlineCitation><Article><Abstract>
<AbstractText Label="FINDINGS">{findings}</AbstractText>
<AbstractText Label="IMPRESSION">No acute disease.</AbstractText></Abstract></Article></MedlineCitation>
<MeSH><major>normal</major></MeSH><parentImage id="{id}_IM-1"/></eCitation>"""
HUGE = "The lungs are clear. " * 100_000          # 2.1 MB of report text


def png(path: Path, size: int = 48) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), 100, np.uint8)).save(path)
    return path


def iu_folder(root: Path) -> Path:
    reports = root / "ecgen-radiology"
    reports.mkdir(parents=True)
    for n, findings in ((1, "Heart size is normal."), (2, HUGE)):
        (reports / f"{n}.xml").write_text(IU_XML.format(id=f"CXR{n}", findings=findings))
        png(root / "NLMCXR_png" / f"CXR{n}_IM-1.png")
    (reports / "3.xml").write_text(IU_XML.format(id="CXR3", findings="cut")[:150])   # unclosed tags
    (reports / "4.xml").write_bytes(bytes(range(256)) * 4)                            # binary
    return root


def test_malformed_and_binary_iu_reports_are_skipped_and_counted_by_name(tmp_path):
    root = iu_folder(tmp_path / "iu")

    counts = prepare("iu_xray", root, tmp_path / "cache", size=32, workers=1, progress=False)

    assert counts["written"] == 2 and counts["skipped_reports"] == 2 and counts["skipped"] == 0
    listed = (tmp_path / "cache" / "skipped.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in listed] == [str(root / "ecgen-radiology" / n) for n in ("3.xml", "4.xml")]
    assert all("ParseError" in line for line in listed)
    kept = {m["id"]: m for m in ImageCache(tmp_path / "cache").meta}
    assert len(kept["CXR2_IM-1"]["findings"]) == len(HUGE.strip())   # a huge report is kept whole


def test_without_a_skip_list_a_malformed_report_raises_naming_its_file(tmp_path):
    root = iu_folder(tmp_path / "iu")

    with pytest.raises(ReportError, match=r"3\.xml: not an IU X-ray report XML \(ParseError"):
        list(iter_reports(root))


def mimic_folder(root: Path, reports: dict[str, bytes]) -> Path:
    """One PA image per study; ``reports``: dicom id → report bytes."""
    rows = [(dicom, 10000000 + i, 50000000 + i) for i, dicom in enumerate(reports)]
    root.mkdir(parents=True)
    (root / "mimic-cxr-2.0.0-metadata.csv").write_text(
        "dicom_id,subject_id,study_id,ViewPosition\n" + "".join(f"{d},{p},{s},PA\n" for d, p, s in rows))
    (root / "mimic-cxr-2.0.0-split.csv").write_text(
        "dicom_id,study_id,subject_id,split\n" + "".join(f"{d},{s},{p},train\n" for d, p, s in rows))
    (root / "mimic-cxr-2.0.0-chexpert.csv").write_text(
        "subject_id,study_id," + ",".join(CHEXPERT_LABELS) + "\n"
        + "".join(f"{p},{s}" + "," * len(CHEXPERT_LABELS) + "\n" for _, p, s in rows))
    for dicom, patient, study in rows:
        folder = root / "files" / f"p{str(patient)[:2]}" / f"p{patient}" / f"s{study}"
        png(folder / f"{dicom}.jpg")
        folder.with_suffix(".txt").write_bytes(reports[dicom])
    return root


def test_a_mimic_report_with_invalid_utf8_is_kept_with_replacement_and_counted(tmp_path):
    clean = b"FINDINGS: The lungs are clear.\n IMPRESSION: No acute process.\n"
    broken = b"FINDINGS: The lungs are \xff\xfe clear.\n IMPRESSION: No \xc3( acute process.\n"
    root = mimic_folder(tmp_path / "mimic", {"d1": clean, "d2": broken})

    counts = prepare("mimic_cxr", root, tmp_path / "cache", size=32, workers=1, progress=False)

    assert counts["written"] == 2 and counts["replaced_reports"] == 1 and counts["skipped_reports"] == 0
    listed = (tmp_path / "cache" / "replaced.txt").read_text()
    assert listed.startswith(str(root / "files" / "p10" / "p10000001" / "s50000001.txt") + "\tinvalid UTF-8 at byte 24")
    kept = {m["id"]: m for m in ImageCache(tmp_path / "cache").meta}
    assert kept["d2"]["findings"] == "The lungs are \ufffd\ufffd clear."


def test_truncated_images_and_decompression_bombs_are_skipped_and_named(tmp_path, monkeypatch):
    root = iu_folder(tmp_path / "iu")
    images = root / "NLMCXR_png"
    truncated = images / "CXR1_IM-1.png"
    png(truncated, size=48)
    truncated.write_bytes(truncated.read_bytes()[:60])
    bomb = images / "CXR2_IM-1.png"
    png(bomb, size=72)                                     # 5,184 pixels: over 1× the limit below
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)   # where PIL only warns and decodes

    counts = prepare("iu_xray", root, tmp_path / "cache", size=32, workers=1, progress=False)

    assert counts["written"] == 0 and counts["skipped"] == 2
    reasons = dict(line.split("\t", 1) for line in (tmp_path / "cache" / "skipped.txt").read_text().splitlines())
    assert reasons[str(bomb)].startswith("DecompressionBombWarning: Image size (5184 pixels) exceeds limit")
    assert reasons[str(truncated)].startswith(("OSError", "SyntaxError", "UnidentifiedImageError"))


def test_a_dicom_bomb_is_refused_before_its_pixels_are_decoded(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"      # digital X-ray
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 65535, 65535, 16, 16, 15
    ds.SamplesPerPixel, ds.PixelRepresentation, ds.PhotometricInterpretation = 1, 0, "MONOCHROME2"
    ds.PixelData = b"\x00\x00" * 16
    path = tmp_path / "bomb.dcm"
    ds.save_as(path, enforce_file_format=True)

    with pytest.raises(ValueError, match="image of 4294836225 pixels exceeds the limit"):
        decode_image(path)


def test_the_counts_are_printed_at_the_end_of_the_command(tmp_path, capsys):
    from kgvlp.cli import main
    root = iu_folder(tmp_path / "iu")

    main(["data", "prepare", "iu_xray", "--root", str(root), "--out", str(tmp_path / "cache"), "--size", "32",
          "--workers", "1"])

    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert counts["skipped_reports"] == 2 and counts["written"] == 2


def test_a_damaged_image_cache_is_refused_naming_the_file_and_line(tmp_path, capsys):
    from kgvlp.cli import main
    from kgvlp.data.cache import CacheError
    prepare("iu_xray", iu_folder(tmp_path / "iu"), tmp_path / "cache", size=32, workers=1, progress=False)
    meta = tmp_path / "cache" / "meta.jsonl"
    meta.write_text(meta.read_text() + '{"row": 2, "id": \n')
    np.save(tmp_path / "cache" / "images.npy", np.array([object()], dtype=object), allow_pickle=True)

    with pytest.raises(CacheError, match=rf"^{meta}, line 3: not a JSON row"):
        ImageCache(tmp_path / "cache")
    meta.write_text("".join(meta.read_text().splitlines(keepends=True)[:2]))
    with pytest.raises(CacheError, match="images.npy: not the uint8 image array"):
        ImageCache(tmp_path / "cache").image(0)
    (tmp_path / "cache" / "info.json").write_bytes(b"\x80\x04")
    code = main(["data", "show", str(tmp_path / "cache"), "--out", str(tmp_path / "show.png")])

    assert code == 2 and capsys.readouterr().err.startswith(f"kgvlp: {tmp_path / 'cache' / 'info.json'}: not the JSON")
