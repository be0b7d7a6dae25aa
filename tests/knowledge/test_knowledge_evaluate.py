"""Blind-set scoring: pair counts, negation/uncertainty rates, normal-report false positives."""
import pytest

from knowledge.baselines import NegspacyDefault, RegexNegEx, combine
from knowledge.blind_set import BlindFinding, BlindLabel, BlindSentence, BlindSet
from knowledge.evaluate import descendants, finding_synonyms, score


def _blind() -> BlindSet:
    sentences = [BlindSentence("1-F0", "1.xml", "FINDINGS", 0, False, "Small left pleural effusion."),
                 BlindSentence("2-F0", "2.xml", "FINDINGS", 0, True, "No pneumothorax."),
                 BlindSentence("3-F0", "3.xml", "FINDINGS", 0, True, "Heart size normal.")]
    labels = [BlindLabel("1-F0", "E", "pleural effusion", "present"),
              BlindLabel("2-F0", "P", "pneumothorax", "absent")]
    return BlindSet(sentences, labels, [BlindFinding("E", "pleural effusion"), BlindFinding("P", "pneumothorax")])


class _Fixed:
    name = "fixed"

    def __init__(self, predictions):
        self.predictions = predictions

    def predict(self, sentences):
        return self.predictions


def test_scores_count_pairs_and_normal_report_false_positives():
    system = _Fixed([{"E": "present"}, {"P": "absent"}, {"E": "present"}])  # third: a false positive

    result, errors = score(system, _blind())

    effusion, pneumothorax = result.findings
    assert (effusion.tp, effusion.fp, effusion.fn, effusion.positives) == (1, 1, 0, 1)
    assert (pneumothorax.tp, pneumothorax.fp, pneumothorax.fn) == (0, 0, 0)
    assert (result.negation_recall.hits, result.negation_recall.total) == (1, 1)
    assert (result.normal_false_positives.hits, result.normal_false_positives.total) == (1, 2)
    assert [(e["sentence_id"], e["gold"], e["predicted"]) for e in errors] == [("3-F0", "none", "present")]


def test_combine_prefers_asserted_then_hedged():
    assert combine(["absent", "uncertain", "present"]) == "present"
    assert combine(["absent", "uncertain"]) == "uncertain"


def test_isa_descendants_count_as_the_finding(bundled_graph):
    effusion = next(c for c, d in bundled_graph.nodes(data=True) if d["name"] == "pleural effusion")
    names = {bundled_graph.nodes[c]["name"] for c in descendants(bundled_graph, effusion)}

    assert {"pleural effusion", "loculated pleural effusion"} <= names
    assert "loculated pleural effusion" in finding_synonyms(bundled_graph, [effusion])[effusion]


@pytest.mark.parametrize("baseline", [RegexNegEx, NegspacyDefault])
def test_baselines_find_and_negate_their_synonyms(baseline):
    system = baseline({"E": ["pleural effusion", "effusion"], "P": ["pneumothorax"]})

    assert system.predict(["No pneumothorax.", "Small pleural effusion."]) == [{"P": "absent"}, {"E": "present"}]


def test_explicit_negation_recall_leaves_out_sentences_without_a_negation_cue():
    blind = _blind()
    dropped = BlindSentence("4-F0", "4.xml", "FINDINGS", 0, False, "Pleural effusions or pneumothorax.")
    blind = BlindSet(blind.sentences + [dropped], blind.labels + [BlindLabel("4-F0", "P", "pneumothorax", "absent")],
                     blind.findings)

    result, _ = score(_Fixed([{}, {"P": "absent"}, {}, {"P": "present"}]), blind)

    assert (result.negation_recall.hits, result.negation_recall.total) == (1, 2)
    assert (result.explicit_negation_recall.hits, result.explicit_negation_recall.total) == (1, 1)


def test_on_the_blind_set_the_linker_meets_its_targets_ahead_of_both_baselines(bundled_graph, linker, capsys):
    from knowledge import cli
    from knowledge.blind_set import load_blind_set
    from knowledge.evaluate import evaluate

    kgvlp, *baselines = [r for r, _ in evaluate(load_blind_set(), bundled_graph, linker)]

    assert kgvlp.micro().f1 >= 0.93 and kgvlp.macro_f1() >= 0.88
    assert kgvlp.normal_false_positives.value <= 0.015 and kgvlp.explicit_negation_recall.value >= 0.99
    for b in baselines:
        assert kgvlp.micro().f1 > b.micro().f1 and kgvlp.macro_f1() > b.macro_f1()
        assert kgvlp.negation_recall.value > b.negation_recall.value
        assert kgvlp.normal_false_positives.value < b.normal_false_positives.value
    cli.main(["evaluate"])
    printed = capsys.readouterr().out
    assert all(name in printed for name in ("kgvlp linker", "regex + NegEx", "negspacy default"))
