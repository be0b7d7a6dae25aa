"""Each metric against values worked out by hand on tiny inputs."""
import math

import pytest
import torch

from kgvlp.eval.grounding import patch_coverage
from kgvlp.eval.metrics import (accuracy, dice_scores, dice_summary, macro_auroc,
                                mean_average_precision, pointing_hits, recall_at_k)


def test_macro_auroc_averages_scorable_classes():
    # class 0: positives 0.35, 0.8 vs negatives 0.1, 0.4 → 3 of 4 pairs ordered → 0.75
    # class 1: the only positive outranks every negative → 1.0
    # class 2: no positives → no AUROC, left out of the mean
    scores = torch.tensor([[0.1, 0.9, 0.5], [0.4, 0.2, 0.5], [0.35, 0.3, 0.5], [0.8, 0.1, 0.5]])
    targets = torch.tensor([[0, 1, 0], [0, 0, 0], [1, 0, 0], [1, 0, 0]])
    macro, per_class = macro_auroc(scores, targets)
    assert per_class == pytest.approx({0: 0.75, 1: 1.0})
    assert macro == pytest.approx(0.875)


def test_macro_auroc_counts_ties_as_half():
    macro, _ = macro_auroc(torch.tensor([0.5, 0.5]), torch.tensor([0, 1]))
    assert macro == pytest.approx(0.5)


def test_accuracy_is_fraction_of_correct_argmax():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0], [1.0, 0.0, 0.0]])
    assert accuracy(logits, torch.tensor([0, 1, 2, 2])) == pytest.approx(0.75)


def test_recall_at_k_by_hand():
    similarity = torch.tensor([[0.9, 0.1, 0.5],    # positive (0) ranked 1st
                               [0.8, 0.2, 0.7],    # positive (1) ranked 3rd
                               [0.1, 0.9, 0.5]])   # positive (2) ranked 2nd
    positives = torch.eye(3, dtype=torch.bool)
    recall = recall_at_k(similarity, positives, ks=(1, 2, 3))
    assert recall == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 1.0})


def test_recall_counts_any_equivalent_positive():
    similarity = torch.tensor([[0.1, 0.9]])
    positives = torch.tensor([[True, True]])   # both reports carry the same text
    assert recall_at_k(similarity, positives, ks=(1,))[1] == 1.0


def test_dice_by_hand():
    predicted = torch.tensor([[[[1, 1], [0, 0]], [[0, 0], [0, 0]]]], dtype=torch.bool)  # (1, 2, 2, 2)
    target = torch.tensor([[[[1, 0], [0, 0]], [[0, 0], [0, 0]]]], dtype=torch.bool)
    # class 0: 2·1 / (2 + 1); class 1: both empty → 1
    assert dice_scores(predicted, target)[0].tolist() == pytest.approx([2 / 3, 1.0])
    summary = dice_summary(predicted, target)
    assert summary["dice"] == pytest.approx(2 / 3)          # only the non-empty target
    assert summary["dice_all"] == pytest.approx((2 / 3 + 1) / 2)


def test_pointing_game_hits_when_peak_patch_is_covered():
    attention = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])
    coverage = torch.tensor([[0.0, 0.5, 0.0], [0.0, 1.0, 1.0]])
    assert pointing_hits(attention, coverage).tolist() == [True, False]


def test_patch_coverage_pools_mask_to_grid():
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[:2, :2] = True
    mask[3, 3] = True
    assert patch_coverage(mask, 2).tolist() == pytest.approx([1.0, 0.0, 0.0, 0.25])


def test_map_is_one_for_exact_boxes_and_zero_for_disjoint():
    target = [{"boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0]]), "labels": torch.tensor([1])}]
    exact = [{"boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0]]), "scores": torch.tensor([0.9]),
              "labels": torch.tensor([1])}]
    disjoint = [{"boxes": torch.tensor([[40.0, 40.0, 60.0, 60.0]]), "scores": torch.tensor([0.9]),
                 "labels": torch.tensor([1])}]
    assert mean_average_precision(exact, target)["map"] == pytest.approx(1.0)
    assert mean_average_precision(disjoint, target)["map"] == pytest.approx(0.0)


def test_map_uses_mgca_iou_range():
    # IoU of these boxes = 20·15 / (20·20) = 0.75: a hit at every threshold in 0.4…0.75
    target = [{"boxes": torch.tensor([[0.0, 0.0, 20.0, 20.0]]), "labels": torch.tensor([1])}]
    shifted = [{"boxes": torch.tensor([[0.0, 0.0, 20.0, 15.0]]), "scores": torch.tensor([1.0]),
                "labels": torch.tensor([1])}]
    assert mean_average_precision(shifted, target)["map"] == pytest.approx(1.0)
    assert math.isclose(mean_average_precision(shifted, target, [0.8])["map"], 0.0)
