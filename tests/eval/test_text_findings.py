"""Text-only finding detection: scores from prompts, AUROC against read labels, uncertain left out."""
import torch

from kgvlp.eval import text_findings as tf

VOCAB = ["there", "is", "no", "effusion", "edema", "possible", "heart", "normal"]


def bag_of_words(texts):
    """A text side that reads words and negation: 'no' flips the finding words that follow."""
    out = torch.zeros(len(texts), len(VOCAB) + 2)
    for i, text in enumerate(texts):
        words = text.lower().replace(".", "").split()
        sign = -1.0 if "no" in words else 1.0
        for w in words:
            if w in ("effusion", "edema"):
                out[i, VOCAB.index(w)] += sign
        out[i, -1] = 1.0  # shared direction: every text is a sentence
    return out


def _set(sentences, present, negated):
    return tf.TextFindingSet(sentences, ["effusion", "edema"], torch.tensor(present), torch.tensor(negated))


SENTENCES = ["There is effusion.", "No effusion.", "Normal heart.", "There is edema.", "Possible effusion."]


def test_a_text_side_that_reads_negation_scores_auroc_one():
    data = _set(SENTENCES, [[1, 0], [0, 0], [0, 0], [0, 1], [-1, 0]],
                [[False, False], [True, False], [False, False], [False, False], [False, False]])
    scores = tf.finding_scores(bag_of_words, data.sentences, data.finding_names)

    effusion = scores[:, 0]

    assert effusion[0] > effusion[2] > effusion[1]  # asserted > unrelated > negated
    metrics = tf.text_finding_metrics(scores, data, min_positives=1)
    assert metrics["auroc"] == 1.0 and metrics["classes_scored"] == 2


def test_uncertain_sentences_are_left_out_not_counted_as_negatives():
    # the only uncertain sentence scores highest: counted as a negative it would lower the AUROC
    data = _set(SENTENCES[:3] + ["There is effusion effusion."], [[1, 0], [0, 0], [0, 0], [-1, 0]],
                [[False, False], [True, False], [False, False], [False, False]])
    scores = tf.finding_scores(bag_of_words, data.sentences, data.finding_names)
    scores[3, 0] = 10.0

    _, per = tf._macro(scores, data.present.clamp(min=0), data.present >= 0, 1, 1)

    assert per == {0: 1.0}


def test_the_committed_blind_set_loads_with_present_absent_and_uncertain():
    data = tf.load_text_finding_set()

    assert len(data.sentences) >= 400
    assert (data.present == 1).sum() > 100 and (data.present == -1).sum() > 0 and data.negated.sum() > 100


def test_text_findings_runs_as_an_eval_task_without_an_image_dataset(tiny_model, tmp_path):
    from kgvlp.eval import evaluate

    # data=None: a text-only task must not try to load an image dataset
    result, = evaluate(tiny_model, None, tasks=["text_findings"], out_dir=tmp_path, progress=False)

    assert {r["model"] for r in result.rows} == {f"{m}/{s}" for m in ("trained", "random", "start")
                                                  for s in ("encoder", "shared")}
    assert all(0.0 <= r["auroc"] <= 1.0 and r["classes_scored"] >= 10 for r in result.rows)
    assert (tmp_path / "text_findings.json").is_file()
