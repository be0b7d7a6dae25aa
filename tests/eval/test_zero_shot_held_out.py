"""Zero-shot splits its AUROC between findings the model read about and findings held out of
every training report (SynthCXR's data.synth.omit_from_reports); retrieval states its chance."""
import pytest
import torch

from kgvlp.eval.zero_shot import report_positives, retrieval_metrics, zero_shot_metrics

NAMES = ["cardiomegaly", "pneumothorax", "nodule"]


def test_held_out_and_seen_findings_are_averaged_apart():
    labels = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.float32)
    scores = torch.stack([labels[:, 0], -labels[:, 1], labels[:, 2]], dim=1)  # perfect, inverted, perfect

    metrics = zero_shot_metrics(scores, labels, False, NAMES, held_out=("pneumothorax",))

    assert metrics["auroc/cardiomegaly"] == 1.0 and metrics["auroc/pneumothorax"] == 0.0
    assert metrics["auroc_held_out"] == 0.0 and metrics["auroc_seen"] == 1.0
    assert metrics["auroc"] == pytest.approx(2 / 3)


def test_a_held_out_name_that_is_no_label_is_refused():
    with pytest.raises(ValueError, match="held-out findings \\['pneumonia'\\] are not labels"):
        zero_shot_metrics(torch.zeros(2, 3), torch.tensor([[1., 0, 1], [0, 1, 0]]), False, NAMES, ("pneumonia",))


def test_retrieval_chance_counts_identical_reports_as_correct():
    reports = [["normal."], ["normal."], ["effusion."], ["nodule."]]   # two identical normal reports
    metrics = retrieval_metrics(torch.eye(4), torch.eye(4), report_positives(reports))

    assert metrics["chance_R@1"] == pytest.approx((2 / 4 + 2 / 4 + 1 / 4 + 1 / 4) / 4)
    assert metrics["i2t_R@1"] == 1.0
