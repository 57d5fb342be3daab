"""Scorers and metrics against independent computations: scikit-learn and rouge-score called
directly, and hand-worked examples with the arithmetic in the comments."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score

from workhorse.tasks.inference import EvalResponse
from workhorse.tasks.scoring import (
    INVALID_LABEL,
    ItemScore,
    classification_metrics,
    extraction_metrics,
    metrics_for,
    normalize_answer,
    operational_metrics,
    parse_json_object,
    parse_label,
    qa_metrics,
    score_item,
    summarization_metrics,
)

LABELS = ["billing", "refund", "technical"]


# --- classification -----------------------------------------------------------------------

@pytest.mark.parametrize("output, expected", [
    ("refund", "refund"),
    ("  Refund.\n", "refund"),
    ('"Technical"', "technical"),
    ('{"label": "billing"}', "billing"),
    ('```json\n{"intent": "refund"}\n```', "refund"),
    ("", INVALID_LABEL),
    (None, INVALID_LABEL),
    ("shipping", INVALID_LABEL),  # a label outside the set is invalid, never mapped to the nearest
    ("I think this is about a refund", INVALID_LABEL),  # a sentence is not guessed at
    ('{"label": "refund", "confidence": 0.9}', INVALID_LABEL),  # two values: ambiguous
])
def test_parse_label(output, expected):
    assert parse_label(output, LABELS) == expected


@pytest.mark.parametrize("output, reference, correct", [
    ("refund", "refund", True),
    ("billing", "refund", False),
    ("", "refund", False),
    (None, "billing", False),
    ("shipping", "billing", False),
])
def test_classification_scorer(output, reference, correct):
    score = score_item("classification", output, reference, {"labels": LABELS})
    assert (score.correct, score.value) == (correct, float(correct))
    assert score.details["reference"] == reference


def test_classification_metrics_hand_worked():
    references = ["billing", "billing", "refund", "refund", "technical", "technical"]
    predictions = ["billing", "refund", "refund", INVALID_LABEL, "technical", "billing"]
    metrics = classification_metrics(references, predictions, LABELS)
    # Correct at positions 0, 2, 4: accuracy 3/6.
    # billing:   TP 1, FP 1 (pos 5), FN 1 (pos 1) -> P 1/2, R 1/2, F 1/2
    # refund:    TP 1, FP 1 (pos 1), FN 1 (pos 3, invalid) -> P 1/2, R 1/2, F 1/2
    # technical: TP 1, FP 0, FN 1 (pos 5) -> P 1, R 1/2, F 2/3
    # macro P = (1/2 + 1/2 + 1)/3 = 2/3; R = 1/2; F = (1/2 + 1/2 + 2/3)/3 = 5/9
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["invalid_rate"] == pytest.approx(1 / 6)
    assert metrics["macro_precision"] == pytest.approx(2 / 3)
    assert metrics["macro_recall"] == pytest.approx(1 / 2)
    assert metrics["macro_f1"] == pytest.approx(5 / 9)
    assert metrics["per_label"]["technical"] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert metrics["confusion_matrix"] == {
        "labels": [*LABELS, INVALID_LABEL],
        "matrix": [[1, 1, 0, 0],    # billing -> billing, refund
                   [0, 1, 0, 1],    # refund -> refund, invalid
                   [1, 0, 1, 0],    # technical -> billing, technical
                   [0, 0, 0, 0]],   # no reference is ever invalid
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_agree_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    references = list(rng.choice(LABELS, size=300))
    predictions = [ref if rng.random() < 0.6 else rng.choice([*LABELS, INVALID_LABEL]) for ref in references]
    metrics = classification_metrics(references, predictions, LABELS)
    # Every known label occurs, so the macro average over them is sklearn's with labels=LABELS.
    expected = {"accuracy": accuracy_score(references, predictions),
                "macro_precision": precision_score(references, predictions, labels=LABELS, average="macro",
                                                   zero_division=0),
                "macro_recall": recall_score(references, predictions, labels=LABELS, average="macro",
                                             zero_division=0),
                "macro_f1": f1_score(references, predictions, labels=LABELS, average="macro", zero_division=0)}
    assert {key: metrics[key] for key in expected} == pytest.approx(expected)
    order = [*LABELS, INVALID_LABEL]
    assert metrics["confusion_matrix"]["matrix"] == confusion_matrix(references, predictions, labels=order).tolist()


@pytest.mark.parametrize("predictions, accuracy, macro_f1", [
    # One class only: every reference is "billing".
    (["billing"] * 4, 1.0, 1.0),  # labels never seen are not counted as 0: F1 stays 1, not 1/3
    # billing P 3/3, R 3/4 -> F 6/7; refund predicted once, never true -> P 0, R 0, F 0; mean 3/7
    (["billing", "billing", "billing", "refund"], 0.75, 3 / 7),
    # An invalid answer costs billing's recall (3/4) but is no class of its own: F 6/7
    (["billing", "billing", "billing", INVALID_LABEL], 0.75, 6 / 7),
    (["billing", "billing", "billing", "shipping"], 0.75, 6 / 7),  # an unknown string counts as invalid
    ([INVALID_LABEL] * 4, 0.0, 0.0),
])
def test_classification_metrics_one_class(predictions, accuracy, macro_f1):
    metrics = classification_metrics(["billing"] * 4, predictions, LABELS)
    assert (metrics["accuracy"], metrics["macro_f1"]) == pytest.approx((accuracy, macro_f1))


def test_one_class_macro_f1_matches_sklearn_default_label_set():
    # sklearn without labels= averages over the labels present in references or predictions.
    references, predictions = ["billing"] * 5, ["billing", "billing", "refund", "billing", "technical"]
    assert classification_metrics(references, predictions, LABELS)["macro_f1"] == pytest.approx(
        f1_score(references, predictions, average="macro", zero_division=0))


def test_an_unknown_predicted_string_lands_in_the_invalid_column():
    metrics = classification_metrics(["billing", "refund"], ["shipping", "refund"], LABELS)
    assert metrics["invalid_rate"] == 0.5
    assert metrics["confusion_matrix"]["matrix"][0] == [0, 0, 0, 1]  # billing -> invalid, not dropped


@pytest.mark.parametrize("references, predictions, message", [
    (["billing", "shipping"], ["billing", "billing"], "shipping"),
    (["billing"], ["billing", "refund"], "1 references but 2 predictions"),
])
def test_classification_metrics_reject_bad_input(references, predictions, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(references, predictions, LABELS)


def test_classification_metrics_empty():
    metrics = classification_metrics([], [], LABELS)
    assert metrics["n"] == 0 and metrics["accuracy"] is None and metrics["macro_f1"] is None
    assert metrics["confusion_matrix"]["matrix"] == [[0] * 4 for _ in range(4)]


# --- extraction ---------------------------------------------------------------------------

SCHEMA = {"type": "object", "required": ["vendor", "total"],
          "properties": {"vendor": {"type": "string"}, "total": {"type": "number"}}}
INVOICE = {"vendor": "Acme", "total": 12.5}


@pytest.mark.parametrize("output, json_valid, schema_valid, fields, correct", [
    ('{"vendor": "Acme", "total": 12.5}', True, True, {"vendor": True, "total": True}, True),
    ('```json\n{"vendor": "acme ", "total": 12.50}\n```', True, True, {"vendor": True, "total": True}, True),
    # The value matches as a number but the schema wants a number, not a string.
    ('{"vendor": "Acme", "total": "12.50"}', True, False, {"vendor": True, "total": True}, True),
    ('{"vendor": "Acme", "total": 13}', True, True, {"vendor": True, "total": False}, False),
    ('{"vendor": "Acme"}', True, False, {"vendor": True, "total": False}, False),
    ('{"vendor": "Acme", "total": 12.5', False, False, {"vendor": False, "total": False}, False),
    ('["Acme", 12.5]', False, False, {"vendor": False, "total": False}, False),  # JSON, not an object
    ("", False, False, {"vendor": False, "total": False}, False),
    (None, False, False, {"vendor": False, "total": False}, False),
])
def test_extraction_scorer(output, json_valid, schema_valid, fields, correct):
    score = score_item("extraction", output, json.dumps(INVOICE), {"json_schema": SCHEMA})
    assert score.details == {"json_valid": json_valid, "schema_valid": schema_valid, "fields": fields}
    assert score.correct is correct
    assert score.value == sum(fields.values()) / len(fields)


@pytest.mark.parametrize("text, expected", [
    ('{"a": 1}', {"a": 1}),
    ('Here you go:\n```json\n{"a": 1}\n```\nThanks', {"a": 1}),
    ('```\n{"a": 1}\n```', {"a": 1}),
    ("{'a': 1}", None),  # Python, not JSON
    ("null", None),
    (None, None),
])
def test_parse_json_object(text, expected):
    assert parse_json_object(text) == expected


def test_extraction_metrics_hand_worked():
    outputs = ['{"vendor": "Acme", "total": 12.5}',   # both fields, valid
               '{"vendor": "Acme", "total": "9"}',    # vendor only, schema-invalid
               'not json']                            # nothing
    scores = [score_item("extraction", out, INVOICE, {"json_schema": SCHEMA}) for out in outputs]
    metrics = extraction_metrics(scores)
    # JSON valid 2/3, schema valid 1/3; fields matched: vendor 2/3, total 1/3 -> pooled 3/6;
    # items with every field right: 1/3.
    assert metrics.pop("per_field") == pytest.approx({"total": 1 / 3, "vendor": 2 / 3})
    assert metrics == pytest.approx({"n": 3, "json_valid_rate": 2 / 3, "schema_valid_rate": 1 / 3,
                                     "field_exact_match": 0.5, "accuracy": 1 / 3})


# --- summarization ------------------------------------------------------------------------

def _direct_rouge(reference: str, prediction: str) -> dict:
    scores = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True).score(reference, prediction)
    return {name: score.fmeasure for name, score in scores.items()}


def test_rouge_hand_worked():
    score = score_item("summarization", "the cat sat", "the cat sat on the mat", {})
    # ROUGE-1: 3 shared unigrams; P 3/3, R 3/6 -> F 2/3.
    # ROUGE-2: shared bigrams "the cat", "cat sat" -> P 2/2, R 2/5 -> F 2*0.4/1.4 = 4/7.
    # ROUGE-L: LCS "the cat sat" = 3 -> same as ROUGE-1, 2/3.
    assert score.details == pytest.approx({"rouge1": 2 / 3, "rouge2": 4 / 7, "rougeL": 2 / 3})
    assert score.value == pytest.approx(2 / 3) and score.correct  # 0.667 >= default pass mark 0.3


@pytest.mark.parametrize("prediction, reference", [
    ("The payments were delayed because the bank was closing", "Payment delayed: the bank closed."),
    ("Customer asks for a refund of the duplicated charge", "customer wants refund for double charge"),
    ("Running servers crashed", "the server runs and crashes"),  # stemming: running/runs, crashed/crashes
])
def test_rouge_matches_rouge_score(prediction, reference):
    assert score_item("summarization", prediction, reference, {}).details == pytest.approx(
        _direct_rouge(reference, prediction))


@pytest.mark.parametrize("output", ["", None, "   "])
def test_rouge_of_empty_summary_is_zero(output):
    score = score_item("summarization", output, "the customer wants a refund", {})
    assert score.details == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    assert not score.correct


@pytest.mark.parametrize("threshold, correct", [(0.6, True), (0.7, False)])
def test_rouge_threshold_from_spec(threshold, correct):
    # ROUGE-L F of this pair is 2/3 (see the hand-worked test): above 0.6, below 0.7.
    score = score_item("summarization", "the cat sat", "the cat sat on the mat", {"rouge_threshold": threshold})
    assert score.correct is correct


def test_rouge_takes_the_best_reference():
    references = ["a dog barked at night", "the cat sat on the mat"]
    score = score_item("summarization", "the cat sat", references, {})
    assert score.value == pytest.approx(max(_direct_rouge(r, "the cat sat")["rougeL"] for r in references))


def test_summarization_metrics_are_means_of_direct_scores():
    pairs = [("the cat sat", "the cat sat on the mat"), ("", "anything at all"),
             ("refund the double charge", "customer wants a refund for a double charge")]
    scores = [score_item("summarization", out, ref, {}) for out, ref in pairs]
    direct = [_direct_rouge(ref, out) for out, ref in pairs]
    metrics = summarization_metrics(scores)
    for name in ("rouge1", "rouge2", "rougeL"):
        assert metrics[name] == pytest.approx(np.mean([d[name] for d in direct]))
    assert metrics["rougeL_distribution"] == pytest.approx([d["rougeL"] for d in direct])


# --- QA and generation --------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  an   apple, a pear  ", "apple pear"),
    ("Theory of the atom", "theory of atom"),  # only whole-word articles go
    (None, ""),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize("output, reference, em, f1", [
    ("The Eiffel Tower", "eiffel tower", 1.0, 1.0),
    # pred [in, paris, france], ref [paris]: overlap 1, P 1/3, R 1 -> F1 2*(1/3)/(4/3) = 1/2
    ("in Paris, France", "Paris", 0.0, 0.5),
    # pred [cat, cat], ref [cat]: overlap counts min(2, 1) = 1, P 1/2, R 1 -> F1 2/3
    ("the cat the cat", "cat", 0.0, 2 / 3),
    ("Paris", ["London", "paris"], 1.0, 1.0),  # any reference counts
    # refs: "France" -> F1 2/3 (P 1/2, R 1); "Paris, France" -> EM. Best of each: EM 1, F1 1.
    ("Paris France", ["France", "Paris, France"], 1.0, 1.0),
    # pred [built, in, 1889]. ref [in, 1889]: overlap 2, P 2/3, R 1 -> F1 (4/3)/(5/3) = 0.8;
    # ref [1889]: P 1/3, R 1 -> F1 0.5. The best reference wins: 0.8.
    ("built in 1889", ["1889", "in 1889?"], 0.0, 0.8),
    ("", "Paris", 0.0, 0.0),
    (None, "Paris", 0.0, 0.0),
    ("The", "an", 1.0, 1.0),  # both normalise to nothing: SQuAD counts that as agreement
])
def test_qa_scorer(output, reference, em, f1):
    score = score_item("qa", output, reference, {})
    assert score.details == pytest.approx({"exact_match": em, "f1": f1})
    assert (score.correct, score.value) == (bool(em), pytest.approx(f1))


def test_qa_metrics_are_means():
    scores = [score_item("qa", out, ref, {}) for out, ref in
              [("Paris", "paris"), ("in Paris, France", "Paris"), (None, "x")]]
    # EM (1 + 0 + 0)/3, F1 (1 + 1/2 + 0)/3
    assert qa_metrics(scores) == pytest.approx({"n": 3, "exact_match": 1 / 3, "f1": 0.5})


@pytest.mark.parametrize("output, reference, correct", [
    ("Thank you, the refund is on its way.", "thank you the refund is on its way", True),
    ("Thanks, the refund is on its way.", "thank you the refund is on its way", False),  # wording counts
    ("Yes", ["no", "yes"], True),
    (None, "yes", False),
])
def test_generation_is_normalised_exact_match(output, reference, correct):
    score = score_item("generation", output, reference, {})
    assert (score.correct, score.value) == (correct, float(correct))


# --- dispatch -----------------------------------------------------------------------------

def test_metrics_for_classification_uses_the_references_kept_by_the_scorer():
    pairs = [("billing", "billing"), ("refund", "billing"), ("oops", "technical")]
    scores = [score_item("classification", out, ref, {"labels": LABELS}) for out, ref in pairs]
    via_dispatch = metrics_for("classification", scores, labels=LABELS)
    assert via_dispatch == classification_metrics(["billing", "billing", "technical"],
                                                  ["billing", "refund", INVALID_LABEL], LABELS)
    assert via_dispatch["accuracy"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("task_type, output, reference, key, expected", [
    ("qa", "Paris", "paris", "exact_match", 1.0),
    ("generation", "nope", "yes", "exact_match", 0.0),
    ("summarization", "the cat sat", "the cat sat on the mat", "rougeL", 2 / 3),
    ("extraction", '{"vendor": "Acme", "total": 12.5}', INVOICE, "accuracy", 1.0),
])
def test_metrics_for_dispatches(task_type, output, reference, key, expected):
    metrics = metrics_for(task_type, [score_item(task_type, output, reference, {"json_schema": SCHEMA})])
    assert metrics[key] == pytest.approx(expected)


@pytest.mark.parametrize("call", [lambda: score_item("poetry", "x", "y"), lambda: metrics_for("poetry", [])])
def test_unknown_task_type_is_an_error(call):
    with pytest.raises(ValueError, match="poetry"):
        call()


# --- operational --------------------------------------------------------------------------

def _row(latency_ms=None, cost_usd=None, error_type=None, cached=False, tokens=(10, 5)) -> EvalResponse:
    prompt, completion = tokens if error_type is None else (None, None)
    return EvalResponse(run_id="r", item_id="i", model="m", hosting="api", prompt_variant="v",
                        output=None if error_type else "ok", latency_ms=latency_ms, prompt_tokens=prompt,
                        completion_tokens=completion, cost_usd=cost_usd, error_type=error_type, cached=cached)


def test_operational_metrics_hand_worked():
    rows = [_row(100, 0.001), _row(200, 0.001, cached=True), _row(300, 0.001), _row(400, 0.001),
            _row(9000, None, error_type="timeout")]  # the timeout's latency must not count
    metrics = operational_metrics(rows, correct=[True, True, False, False, False])
    # Answered latencies 100..400: p50 = 250; p95 at rank 0.95*3 = 2.85 -> 300 + 0.85*100 = 385.
    # Cost 4 * 0.001 = 0.004 over 5 items -> 0.8 per 1k items; 2 correct -> 0.002 each.
    assert metrics == pytest.approx({
        "n": 5, "answered": 4, "error_rate": 0.2, "cached_rate": 0.2, "latency_p50_ms": 250.0,
        "latency_p95_ms": 385.0, "prompt_tokens": 40, "completion_tokens": 20, "cost_usd": 0.004,
        "cost_per_1k_items": 0.8, "cost_per_correct": 0.002})


@pytest.mark.parametrize("rows, correct, unknown", [
    ([_row(100, 0.001), _row(120, None)], [True, True], ["cost_usd", "cost_per_1k_items", "cost_per_correct"]),
    ([_row(100, 0.001), _row(120, 0.001)], [False, False], ["cost_per_correct"]),  # not inf
    ([_row(100, 0.001)], None, ["cost_per_correct"]),
    ([_row(None, None, error_type="timeout")], [False],
     ["latency_p50_ms", "latency_p95_ms", "cost_usd", "cost_per_1k_items", "cost_per_correct"]),
    ([], None, ["error_rate", "cached_rate", "latency_p50_ms", "cost_usd", "cost_per_1k_items"]),
])
def test_operational_metrics_unknown_is_none_never_zero(rows, correct, unknown):
    metrics = operational_metrics(rows, correct)
    assert {key: metrics[key] for key in unknown} == dict.fromkeys(unknown)


def test_operational_percentiles_match_numpy():
    latencies = np.random.default_rng(3).lognormal(5, 1, size=257)
    metrics = operational_metrics([_row(float(x), 0.0) for x in latencies])
    assert (metrics["latency_p50_ms"], metrics["latency_p95_ms"]) == pytest.approx(
        (np.median(latencies), np.quantile(latencies, 0.95)))


def test_item_score_defaults_are_not_shared():
    a, b = ItemScore(True, 1.0), ItemScore(False, 0.0)
    a.details["x"] = 1
    assert b.details == {}
