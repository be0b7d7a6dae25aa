"""Heart-size statements, alternatives and qualified opacities, on real IU sentences."""
import pytest


def _findings(linker, name_of, text):
    return [(name_of(m.cui), m.negated, m.uncertain) for m in linker.link(text)]


@pytest.mark.parametrize("sentence, verdict", [
    ("Heart size is normal.", (True, False)),
    ("The heart is not significantly enlarged.", (True, False)),
    ("Stable normal cardiac size and contour, unremarkable mediastinal silhouette.", (True, False)),
    ("Heart size upper limits of normal but stable.", (True, False)),
    ("Heart is enlarged.", (False, False)),
    ("Borderline heart size and abnormal interstitial pulmonary pattern.", (False, True)),
])
def test_heart_size_statements_are_cardiomegaly_mentions(linker, name_of, sentence, verdict):
    cardiomegaly = [(n, u) for name, n, u in _findings(linker, name_of, sentence) if name == "cardiomegaly"]

    assert cardiomegaly == [verdict]


@pytest.mark.parametrize("sentence", ["The cardiomediastinal silhouette is normal.",
                                      "Cardiac pacemaker in normal position.",
                                      "Heart size is unchanged."])
def test_no_cardiomegaly_without_a_statement_about_heart_size(linker, name_of, sentence):
    assert "cardiomegaly" not in [name for name, _, _ in _findings(linker, name_of, sentence)]


def test_alternatives_are_uncertain_but_negated_lists_stay_negated(linker, name_of):
    hedged = _findings(linker, name_of, "XXXX lingular scarring and/or atelectasis.")
    negated = _findings(linker, name_of, "No focal consolidation, pleural effusion, or pneumothorax.")

    assert hedged == [("fibrotic band", False, True), ("atelectasis", False, True)]
    assert all(n and not u for _, n, u in negated) and len(negated) == 3


def test_anonymised_hedge_before_an_explanation_is_uncertain(linker, name_of):
    found = _findings(linker, name_of, "1. Left lower lobe opacities XXXX representing pneumonia.")

    assert ("pneumonia", False, True) in found and ("opacity", False, False) in found


def test_qualified_opacity_is_also_an_opacity(linker, name_of):
    found = _findings(linker, name_of, "Nodular densities consistent with chronic granulomatous disease.")

    assert [name for name, _, _ in found] == ["pulmonary nodule", "opacity", "granuloma"]


def test_bone_density_is_not_a_lung_opacity(linker, name_of):
    assert "opacity" not in [name for name, _, _ in _findings(linker, name_of, "Bone density is normal.")]


def test_masslike_is_an_uncertain_mass_and_an_asserted_opacity(linker, name_of):
    found = _findings(linker, name_of, "Masslike opacification of right apex.")

    assert found == [("mass", False, True), ("opacity", False, False)]


def test_there_is_xxxx_is_not_a_hedge(linker, name_of):
    assert _findings(linker, name_of, "There is XXXX biapical scarring.") == [("fibrotic band", False, False)]


@pytest.mark.parametrize("sentence", ["Marked increase in heart size.",
                                      "Moderate-to-marked enlargement of the cardiac silhouette, mediastinal "
                                      "contours appear similar to prior."])
def test_enlargement_before_the_heart_is_cardiomegaly(linker, name_of, sentence):
    assert ("cardiomegaly", False, False) in _findings(linker, name_of, sentence)
