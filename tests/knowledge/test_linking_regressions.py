"""One test per cause found in issue 19, each from its real IU X-ray sentence."""
import pytest

from knowledge import context
from knowledge.variants import singular


def _findings(linker, name_of, text):
    """(concept name, negated, uncertain) of every mention, in order."""
    return [(name_of(m.cui), m.negated, m.uncertain) for m in linker.link(text)]


@pytest.mark.parametrize("sentence, mention", [
    ("No focal consolidation.", "focal consolidation"),
    ("No definite pneumothorax.", "pneumothorax"),
    ("No visible pleural effusion or pneumothorax.", "pleural effusion"),
    ("There are no visible nodules or masses.", "nodules"),
])
def test_negation_trigger_overlapping_the_alias_still_negates(sentence, mention):
    assert context.assess_text(sentence, mention) == (True, False)


def test_no_focal_consolidation_is_a_negated_consolidation(linker, name_of):
    assert _findings(linker, name_of, "No focal consolidation.") == [("consolidation", True, False)]


@pytest.mark.parametrize("sentence", ["Residuals of prior granulomatous infection.",
                                      "A there are calcified mediastinal and hilar lymph XXXX suggesting "
                                      "prior histoplasmosis infection."])
def test_infection_is_not_linked_as_pneumonia(linker, name_of, sentence):
    assert "pneumonia" not in [name for name, _, _ in _findings(linker, name_of, sentence)]


def test_would_be_a_consideration_is_uncertain(linker, name_of):
    text = ("A pneumonia superimposed on changes of emphysema and parenchymal scarring "
            "would be a consideration.")

    assert ("pneumonia", False, True) in _findings(linker, name_of, text)


@pytest.mark.parametrize("sentence", ["The lungs are hyperexpanded with flattening of the bilateral hemidiaphragms.",
                                      "Lungs are hyperinflated with flattened diaphragms.",
                                      "Hyperaerated lungs with flattened hemidiaphragms.",
                                      "There is hyperinflation of the lungs but they are clear."])
def test_hyperinflation_variants_link_hyperinflated_lungs_not_emphysema(linker, name_of, sentence):
    names = [name for name, _, _ in _findings(linker, name_of, sentence)]

    assert "hyperinflated lungs" in names and "emphysema" not in names


def test_consolidative_opacity_is_a_consolidation(linker, name_of):
    found = _findings(linker, name_of, "Interval improvement in left base consolidative opacity.")

    assert ("consolidation", False, False) in found


def test_pneumothoraces_is_the_plural_of_pneumothorax(linker, name_of):
    found = _findings(linker, name_of, "No pleural effusions or pneumothoraces.")

    assert singular("pneumothoraces") == "pneumothorax"
    assert found == [("pleural effusion", True, False), ("pneumothorax", True, False)]


@pytest.mark.parametrize("plural, single", [("bullae", "bulla"), ("apices", "apex"), ("opacities", "opacity"),
                                            ("effusions", "effusion"), ("vertebrae", "vertebra"),
                                            ("granulomas", "granuloma"), ("pancreas", "pancreas")])
def test_latin_and_english_plurals(plural, single):
    assert singular(plural) == single


@pytest.mark.parametrize("sentence, name", [
    ("Bibasilar and right midlung pulmonary opacities, XXXX atelectatic changes.", "atelectasis"),
    ("Underlying emphysematous changes are noted.", "emphysema"),
    ("There is scoliotic curvature the thoracic spine.", "scoliosis"),
    ("Left PICC tip at cavoatrial junction.", "central venous catheter"),
    ("Calcified right hilar granulomas.", "granuloma")])
def test_adjective_forms_and_abbreviations_link_their_concept(linker, name_of, sentence, name):
    assert name in [n for n, _, _ in _findings(linker, name_of, sentence)]


def test_lower_case_word_is_not_read_as_an_abbreviation(linker, name_of):
    assert "tuberculosis" not in [n for n, _, _ in _findings(linker, name_of, "Set the dish aside, tb.")]
