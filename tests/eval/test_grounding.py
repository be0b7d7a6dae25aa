"""Grounding for every model: CTA's attention where CTA is trained, the word→patch similarity
map for any model with a shared space, chance per finding from mask areas, PNG overlays."""
import pytest
import torch

from eval_fixtures import make_tiny_model
from kgvlp.eval import evaluate
from kgvlp.eval.grounding import map_sources, pointing_game, similarity_space


def _grounding_row(model, splits, out_dir):
    [result] = evaluate(model, splits, tasks=["grounding"], out_dir=out_dir, baselines=False, device="cpu",
                        progress=False)
    assert result.skipped is None
    return result.rows[0]


def test_an_ita_only_model_gets_a_similarity_pointing_game(tiny_splits, tmp_path):
    model = make_tiny_model(objectives=("ita",))
    row = _grounding_row(model, tiny_splits, tmp_path)

    assert map_sources(model) == ["similarity"] and row["map"] == "similarity"
    assert row["pointing_game"] == row["pointing_game_similarity"]
    assert "pointing_game_cta" not in row
    assert (tmp_path / "similarity_trained.png").stat().st_size > 1000


def test_a_cta_model_is_scored_by_its_attention_and_by_similarity(tiny_splits, tmp_path):
    model = make_tiny_model(objectives=("ita", "cta"))
    row = _grounding_row(model, tiny_splits, tmp_path)

    assert row["map"] == "cta" and row["pointing_game"] == row["pointing_game_cta"]
    assert 0.0 <= row["pointing_game_similarity"] <= 1.0
    assert (tmp_path / "attention_trained.png").is_file() and (tmp_path / "similarity_trained.png").is_file()


def test_a_prior_model_compares_its_same_width_tokens(tiny_splits, tmp_path):
    model = make_tiny_model(objectives=("prior_global",))
    assert similarity_space(model) == "tokens"
    assert 0.0 <= _grounding_row(model, tiny_splits, tmp_path)["pointing_game_similarity"] <= 1.0


def test_chance_is_the_share_of_patches_each_finding_touches(tiny_splits):
    # every 16-px square of TinyFindings sits across 2×2 of the 4×4 16-px patches
    metrics, _ = pointing_game(make_tiny_model(objectives=("ita",)), tiny_splits["test"], torch.device("cpu"),
                               progress=False, source="similarity")
    per_finding = {k: v for k, v in metrics.items() if k.startswith("chance/")}

    assert per_finding and all(v == pytest.approx(4 / 16) for v in per_finding.values())
    assert metrics["chance"] == pytest.approx(4 / 16)


def test_a_map_that_peaks_on_the_finding_always_hits(tiny_splits, monkeypatch):
    import kgvlp.eval.grounding as grounding
    test = tiny_splits["test"]
    model = make_tiny_model(objectives=("ita",))

    def oracle(model, batch):   # word i of sample b looks at the patches of the finding it names
        samples = [test[i] for i in batch.sample_index.tolist()]
        words = batch.word_index.max().item() + 1
        maps = torch.zeros(len(samples), max(words, 64), 16)
        for b, sample in enumerate(samples):
            for mention in sample.mentions:
                if mention["instances"]:
                    coverage = grounding.patch_coverage(sample.masks[mention["instances"]].any(0), 4)
                    maps[b, mention["words"]] = coverage
        return maps, torch.ones(maps.shape[:2], dtype=torch.bool)

    monkeypatch.setitem(grounding._MAPS, "similarity", oracle)
    metrics, _ = pointing_game(model, test, torch.device("cpu"), progress=False, source="similarity")
    assert metrics["pointing_game"] == 1.0 and metrics["mentions"] > 0


def test_an_unknown_map_source_names_the_choices(tiny_splits):
    with pytest.raises(ValueError, match="valid choices: cta, similarity"):
        pointing_game(make_tiny_model(objectives=("ita",)), tiny_splits["test"], torch.device("cpu"),
                      progress=False, source="gradcam")
