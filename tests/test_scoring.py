"""Scorers and metrics against independent computations: scikit-learn and rouge-score called
directly, and hand-worked examples with the arithmetic in the comments."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score

from workhorse.tasks.common.runner import EvalResponse
from workhorse.tasks.evaluate.scoring import (
    INVALID_LABEL,
    SCORERS,
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
    score_or_error,
    summarization_metrics,
)

LABELS = ["billing", "refund", "technical"]


# --- classification -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "output, expected",
    [
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
    ],
)
def test_parse_label(output, expected):
    assert parse_label(output, LABELS) == expected


@pytest.mark.parametrize(
    "output, reference, correct",
    [
        ("refund", "refund", True),
        ("billing", "refund", False),
        ("", "refund", False),
        (None, "billing", False),
        ("shipping", "billing", False),
    ],
)
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
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    )
    assert metrics["confusion_matrix"] == {
        "labels": [*LABELS, INVALID_LABEL],
        "matrix": [
            [1, 1, 0, 0],  # billing -> billing, refund
            [0, 1, 0, 1],  # refund -> refund, invalid
            [1, 0, 1, 0],  # technical -> billing, technical
            [0, 0, 0, 0],
        ],  # no reference is ever invalid
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_agree_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    references = list(rng.choice(LABELS, size=300))
    predictions = [ref if rng.random() < 0.6 else rng.choice([*LABELS, INVALID_LABEL]) for ref in references]
    metrics = classification_metrics(references, predictions, LABELS)
    # Every known label occurs, so the macro average over them is sklearn's with labels=LABELS.
    expected = {
        "accuracy": accuracy_score(references, predictions),
        "macro_precision": precision_score(
            references, predictions, labels=LABELS, average="macro", zero_division=0
        ),
        "macro_recall": recall_score(
            references, predictions, labels=LABELS, average="macro", zero_division=0
        ),
        "macro_f1": f1_score(references, predictions, labels=LABELS, average="macro", zero_division=0),
    }
    assert {key: metrics[key] for key in expected} == pytest.approx(expected)
    order = [*LABELS, INVALID_LABEL]
    assert (
        metrics["confusion_matrix"]["matrix"]
        == confusion_matrix(references, predictions, labels=order).tolist()
    )


@pytest.mark.parametrize(
    "predictions, accuracy, macro_f1",
    [
        # One class only: every reference is "billing".
        (["billing"] * 4, 1.0, 1.0),  # labels never seen are not counted as 0: F1 stays 1, not 1/3
        # billing P 3/3, R 3/4 -> F 6/7; refund predicted once, never true -> P 0, R 0, F 0; mean 3/7
        (["billing", "billing", "billing", "refund"], 0.75, 3 / 7),
        # An invalid answer costs billing's recall (3/4) but is no class of its own: F 6/7
        (["billing", "billing", "billing", INVALID_LABEL], 0.75, 6 / 7),
        (["billing", "billing", "billing", "shipping"], 0.75, 6 / 7),  # an unknown string counts as invalid
        ([INVALID_LABEL] * 4, 0.0, 0.0),
    ],
)
def test_classification_metrics_one_class(predictions, accuracy, macro_f1):
    metrics = classification_metrics(["billing"] * 4, predictions, LABELS)
    assert (metrics["accuracy"], metrics["macro_f1"]) == pytest.approx((accuracy, macro_f1))


def test_one_class_macro_f1_matches_sklearn_default_label_set():
    # sklearn without labels= averages over the labels present in references or predictions.
    references, predictions = ["billing"] * 5, ["billing", "billing", "refund", "billing", "technical"]
    assert classification_metrics(references, predictions, LABELS)["macro_f1"] == pytest.approx(
        f1_score(references, predictions, average="macro", zero_division=0)
    )


def test_an_unknown_predicted_string_lands_in_the_invalid_column():
    metrics = classification_metrics(["billing", "refund"], ["shipping", "refund"], LABELS)
    assert metrics["invalid_rate"] == 0.5
    assert metrics["confusion_matrix"]["matrix"][0] == [0, 0, 0, 1]  # billing -> invalid, not dropped


@pytest.mark.parametrize(
    "references, predictions, message",
    [
        (["billing", "shipping"], ["billing", "billing"], "shipping"),
        (["billing"], ["billing", "refund"], "1 references but 2 predictions"),
    ],
)
def test_classification_metrics_reject_bad_input(references, predictions, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(references, predictions, LABELS)


def test_classification_metrics_empty():
    metrics = classification_metrics([], [], LABELS)
    assert metrics["n"] == 0 and metrics["accuracy"] is None and metrics["macro_f1"] is None
    assert metrics["confusion_matrix"]["matrix"] == [[0] * 4 for _ in range(4)]


# --- extraction ---------------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "required": ["vendor", "total"],
    "properties": {"vendor": {"type": "string"}, "total": {"type": "number"}},
}
INVOICE = {"vendor": "Acme", "total": 12.5}


@pytest.mark.parametrize(
    "output, json_valid, schema_valid, fields, correct, prf",
    [
        ('{"vendor": "Acme", "total": 12.5}', True, True, {"vendor": True, "total": True}, True, (1, 1, 1)),
        (
            '```json\n{"vendor": "acme ", "total": 12.50}\n```',
            True,
            True,
            {"vendor": True, "total": True},
            True,
            (1, 1, 1),
        ),
        # The value matches as a number but the schema wants a number, not a string.
        (
            '{"vendor": "Acme", "total": "12.50"}',
            True,
            False,
            {"vendor": True, "total": True},
            True,
            (1, 1, 1),
        ),
        (
            '{"vendor": "Acme", "total": 13}',
            True,
            True,
            {"vendor": True, "total": False},
            False,
            (1 / 2, 1 / 2, 1 / 2),
        ),
        # 1 of 1 predicted right, 1 of 2 expected found: F1 2*(1*1/2)/(3/2) = 2/3
        ('{"vendor": "Acme"}', True, False, {"vendor": True, "total": False}, False, (1, 1 / 2, 2 / 3)),
        (
            '{"vendor": "Acme", "total": 12.5',
            False,
            False,
            {"vendor": False, "total": False},
            False,
            (0, 0, 0),
        ),
        # JSON, but an array where the schema wants an object: valid JSON, invalid schema, nothing matches.
        ('["Acme", 12.5]', True, False, {"vendor": False, "total": False}, False, (0, 0, 0)),
        ("", False, False, {"vendor": False, "total": False}, False, (0, 0, 0)),
        (None, False, False, {"vendor": False, "total": False}, False, (0, 0, 0)),
    ],
)
def test_extraction_scorer(output, json_valid, schema_valid, fields, correct, prf):
    score = score_item("extraction", output, json.dumps(INVOICE), {"json_schema": SCHEMA})
    details = {key: score.details[key] for key in ("json_valid", "schema_valid", "fields")}
    assert details == {"json_valid": json_valid, "schema_valid": schema_valid, "fields": fields}
    assert score.correct is correct
    assert (score.details["precision"], score.details["recall"], score.details["f1"]) == pytest.approx(prf)
    assert score.value == pytest.approx(prf[2])  # value is the item's F1


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"a": 1}', {"a": 1}),
        ('Here you go:\n```json\n{"a": 1}\n```\nThanks', {"a": 1}),
        ('```\n{"a": 1}\n```', {"a": 1}),
        ("{'a': 1}", None),  # Python, not JSON
        ("null", None),
        ('["a"]', None),  # an array is JSON but not an object: parse_json_object stays object-only
        (None, None),
    ],
)
def test_parse_json_object(text, expected):
    assert parse_json_object(text) == expected


# Hand-computed element-level scores for every JSON shape. Units are counted once per shape:
# a scalar is one unit (null none); an object counts its fields' units (nested objects down to
# their leaves); a list counts its non-null elements, matched as a multiset (or, ordered, along
# the longest common subsequence); an element that is an object is one unit, matched whole.
# P = matched / predicted units, R = matched / expected units, F1 = 2PR / (P + R); two empty
# answers agree (1, 1, 1); a ratio over 0 is 0; output that is not JSON scores 0, 0, 0.
ENTITIES = {"type": "array", "items": {"type": "string"}}
LINES = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["sku", "qty"],
        "additionalProperties": False,
        "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
    },
}
PERSON = {
    "type": "object",
    "required": ["name", "address"],
    "properties": {
        "name": {"type": "string"},
        "phone": {"type": ["string", "null"]},
        "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string"}}},
    },
}
TAGGED = {
    "type": "object",
    "properties": {"invoice": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
}
AMOUNT = {"type": "number"}
COMPANY = {"type": "string"}
COMPANIES = ["Acme", "Globex", "Acme", "Initech"]  # "Acme" twice: a multiset, not a set
LINE_ITEMS = [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}]
ADA = {"name": "Ada Lovelace", "address": {"city": "London", "zip": "W1"}}
ORDERED = {"list_order": "ordered"}

SHAPES = [
    # id, output, reference, schema, options, (P, R, F1), correct, json_valid, schema_valid
    # --- lists of strings (entities), multiset by default
    (
        "same-multiset-any-order-case-space",
        '["acme", " Initech", "ACME", "Globex"]',
        COMPANIES,
        ENTITIES,
        {},
        (1, 1, 1),
        True,
        True,
        True,
    ),  # 4 of 4 both ways
    (
        "duplicate-dropped",
        '["Acme", "Globex", "Initech"]',
        COMPANIES,
        ENTITIES,
        {},
        # matched Acme min(1, 2) + Globex + Initech = 3; P 3/3, R 3/4, F1 2*(3/4)/(7/4) = 6/7
        (1, 3 / 4, 6 / 7),
        False,
        True,
        True,
    ),
    (
        "duplicate-extra",
        '["Acme", "Acme", "Acme", "Globex", "Initech"]',
        COMPANIES,
        ENTITIES,
        {},
        # matched Acme min(3, 2) + 1 + 1 = 4; P 4/5, R 4/4, F1 2*(4/5)/(9/5) = 8/9
        (4 / 5, 1, 8 / 9),
        False,
        True,
        True,
    ),
    (
        "missing-and-extra",
        '["Acme", "Umbrella"]',
        ["Acme", "Globex"],
        ENTITIES,
        {},
        (1 / 2, 1 / 2, 1 / 2),
        False,
        True,
        True,
    ),  # matched 1 of 2 predicted, 1 of 2 expected
    ("nothing-found", "[]", ["Acme"], ENTITIES, {}, (0, 0, 0), False, True, True),  # P 0/0 -> 0, R 0/1
    ("both-empty", "[]", [], ENTITIES, {}, (1, 1, 1), True, True, True),
    (
        "hallucinated-on-empty",
        '["Acme"]',
        [],
        ENTITIES,
        {},
        (0, 0, 0),
        False,
        True,
        True,
    ),  # P 0/1, R 0/0 -> 0
    ("fenced-list", '```json\n["Acme"]\n```', ["acme"], ENTITIES, {}, (1, 1, 1), True, True, True),
    # --- order: the same answer multiset vs ordered
    ("swapped-multiset", '["b", "a", "c"]', ["a", "b", "c"], ENTITIES, {}, (1, 1, 1), True, True, True),
    (
        "swapped-ordered",
        '["b", "a", "c"]',
        ["a", "b", "c"],
        ENTITIES,
        ORDERED,
        (2 / 3, 2 / 3, 2 / 3),
        False,
        True,
        True,
    ),  # longest common subsequence "a c" (or "b c"): 2 of 3 each
    (
        "inserted-first-ordered",
        '["x", "a", "b", "c"]',
        ["a", "b", "c"],
        ENTITIES,
        ORDERED,
        # LCS "a b c" = 3 (position by position would be 0): P 3/4, R 3/3, F1 2*(3/4)/(7/4) = 6/7
        (3 / 4, 1, 6 / 7),
        False,
        True,
        True,
    ),
    ("same-ordered-case", '["A", " b"]', ["a", "b"], ENTITIES, ORDERED, (1, 1, 1), True, True, True),
    # --- lists of objects (line items): an element is one unit, matched whole
    (
        "lines-any-order",
        '[{"sku": "B-2", "qty": 1}, {"sku": "A-1", "qty": 2}]',
        LINE_ITEMS,
        LINES,
        {},
        (1, 1, 1),
        True,
        True,
        True,
    ),
    (
        "lines-any-order-ordered",
        '[{"sku": "B-2", "qty": 1}, {"sku": "A-1", "qty": 2}]',
        LINE_ITEMS,
        LINES,
        ORDERED,
        (1 / 2, 1 / 2, 1 / 2),
        False,
        True,
        True,
    ),  # LCS of 2 swapped elements: 1
    (
        "lines-quantities-swapped",
        '[{"sku": "A-1", "qty": 1}, {"sku": "B-2", "qty": 2}]',
        LINE_ITEMS,
        LINES,
        {},
        # neither line is right whole (pooling fields across lines would have scored 1, 1, 1)
        (0, 0, 0),
        False,
        True,
        True,
    ),
    (
        "lines-one-wrong-one-missing",
        '[{"sku": "A-1", "qty": 2}, {"sku": "C-3", "qty": 5}]',
        [*LINE_ITEMS, {"sku": "D-4", "qty": 3}],
        LINES,
        {},
        # matched 1; P 1/2, R 1/3, F1 2*(1/6)/(5/6) = 2/5
        (1 / 2, 1 / 3, 2 / 5),
        False,
        True,
        True,
    ),
    (
        "lines-normalised-but-schema-invalid",
        '[{"sku": "a-1", "qty": "2"}, {"sku": "B-2", "qty": 1}]',
        LINE_ITEMS,
        LINES,
        {},
        (1, 1, 1),
        True,
        True,
        False,
    ),  # "a-1" ~ "A-1", "2" ~ 2: right, but qty must be an integer
    (
        "line-missing-a-field",
        '[{"sku": "A-1"}, {"sku": "B-2", "qty": 1}]',
        LINE_ITEMS,
        LINES,
        {},
        (1 / 2, 1 / 2, 1 / 2),
        False,
        True,
        False,
    ),  # {"sku": "A-1"} is not the line {"sku": "A-1", "qty": 2}
    # --- nested objects: leaves by path
    (
        "nested-missing-field",
        '{"name": "ada  lovelace", "address": {"city": "London"}}',
        ADA,
        PERSON,
        {},
        # name, address.city matched; address.zip missing: P 2/2, R 2/3, F1 2*(2/3)/(5/3) = 4/5
        (1, 2 / 3, 4 / 5),
        False,
        True,
        True,
    ),
    (
        "nested-wrong-and-extra",
        '{"name": "Ada Lovelace", "address": {"city": "Paris", "zip": "W1"}, "age": 36}',
        ADA,
        PERSON,
        {},
        # name, zip matched; city wrong; age extra: P 2/4, R 2/3, F1 2*(1/3)/(7/6) = 4/7
        (1 / 2, 2 / 3, 4 / 7),
        False,
        True,
        True,
    ),
    (
        "nested-object-as-text",
        '{"name": "Ada Lovelace", "address": "London W1"}',
        ADA,
        PERSON,
        {},
        # name matched; address is text where two leaves are expected: P 1/2, R 1/3, F1 2/5
        (1 / 2, 1 / 3, 2 / 5),
        False,
        True,
        False,
    ),
    (
        "null-field-is-absent",
        '{"name": "Ada Lovelace", "address": {"city": "London", "zip": "W1"}}',
        {**ADA, "phone": None},
        PERSON,
        {},
        (1, 1, 1),
        True,
        True,
        True,
    ),  # 3 of 3: phone has no unit
    (
        "object-with-list-field",
        '{"invoice": "inv-7", "tags": ["paid", "urgent", "late"]}',
        {"invoice": "INV-7", "tags": ["urgent", "paid"]},
        TAGGED,
        {},
        # invoice 1 of 1; tags 2 matched of 3 predicted, 2 expected: P 3/4, R 3/3, F1 6/7
        (3 / 4, 1, 6 / 7),
        False,
        True,
        True,
    ),
    # --- scalars
    ("scalar-number-text", '"1,250.50"', 1250.5, AMOUNT, {}, (1, 1, 1), True, True, False),  # right, a string
    ("scalar-number-wrong", "42", 41, AMOUNT, {}, (0, 0, 0), False, True, True),  # P 0/1, R 0/1
    ("scalar-text-case-space", '"  acme   Corp "', "Acme Corp", COMPANY, {}, (1, 1, 1), True, True, True),
    ("scalar-null", "null", 3, AMOUNT, {}, (0, 0, 0), False, True, False),  # P 0/0 -> 0, R 0/1
    # --- not JSON, or JSON of another shape
    ("truncated-list", '["Acme", "Globex"', ["Acme", "Globex"], ENTITIES, {}, (0, 0, 0), False, False, False),
    ("prose", "Acme, Globex", ["Acme", "Globex"], ENTITIES, {}, (0, 0, 0), False, False, False),
    ("no-output", None, ["Acme"], ENTITIES, {}, (0, 0, 0), False, False, False),
    (
        "wrapped-in-an-object",
        '{"entities": ["Acme", "Globex"]}',
        ["Acme", "Globex"],
        ENTITIES,
        {},
        (0, 0, 0),
        False,
        True,
        False,
    ),  # an object where a list is expected: P 0/2, R 0/2
]


@pytest.mark.parametrize(
    "output, reference, schema, options, prf, correct, json_valid, schema_valid",
    [row[1:] for row in SHAPES],
    ids=[row[0] for row in SHAPES],
)
@pytest.mark.parametrize("as_text", [True, False], ids=["reference-as-json-text", "reference-as-value"])
def test_extraction_scores_every_json_shape(
    output, reference, schema, options, prf, correct, json_valid, schema_valid, as_text
):
    reference = (
        json.dumps(reference) if as_text else reference
    )  # golden rows store text; code may pass values
    score = score_item("extraction", output, reference, {"json_schema": schema, **options})
    details = score.details
    assert (details["precision"], details["recall"], details["f1"]) == pytest.approx(prf)
    assert (score.correct, details["json_valid"], details["schema_valid"]) == (
        correct,
        json_valid,
        schema_valid,
    )
    assert score.value == pytest.approx(prf[2]) and score.error is None


@pytest.mark.parametrize(
    "output, fields",
    [
        (
            '{"name": "ada  lovelace", "address": {"city": "London"}}',
            {"name": True, "address.city": True, "address.zip": False},
        ),
        (
            '{"name": "Ada Lovelace", "address": "London W1"}',
            {"name": True, "address.city": False, "address.zip": False},
        ),
        ("not json", {"name": False, "address.city": False, "address.zip": False}),
    ],
)
def test_nested_fields_are_reported_by_path(output, fields):
    assert score_item("extraction", output, ADA, {"json_schema": PERSON}).details["fields"] == fields


def test_an_unknown_list_order_is_an_error_before_any_item():
    with pytest.raises(ValueError, match="list_order 'sorted'"):
        score_or_error("extraction", "[]", [], {"list_order": "sorted"})


def test_a_scorer_exception_is_the_items_error_not_a_crash(monkeypatch):
    def old_extraction(output, reference, spec):  # today's failure on a list reference
        return json.loads(reference)

    monkeypatch.setitem(SCORERS, "extraction", old_extraction)
    score = score_or_error("extraction", '["Acme"]', ["Acme"], {})
    assert (score.correct, score.value, score.prediction) == (False, 0.0, None)
    assert score.error == "TypeError: the JSON object must be str, bytes or bytearray, not list"
    assert score.details == {"scoring_error": score.error}
    with pytest.raises(TypeError):  # score_item itself still raises: tests and callers see bugs
        score_item("extraction", '["Acme"]', ["Acme"], {})


def test_a_schema_jsonschema_cannot_read_is_a_scoring_error():
    score = score_or_error(
        "extraction", '["Acme"]', ["Acme"], {"json_schema": {"type": "array", "items": {"type": "strnig"}}}
    )
    assert score.error.startswith("UnknownType: Unknown type 'strnig'") and "\n" not in score.error


def test_extraction_metrics_hand_worked():
    outputs = [
        '{"vendor": "Acme", "total": 12.5}',  # both fields, valid
        '{"vendor": "Acme", "total": "9"}',  # vendor only, schema-invalid
        "not json",
    ]  # nothing
    scores = [score_item("extraction", out, INVOICE, {"json_schema": SCHEMA}) for out in outputs]
    metrics = extraction_metrics(scores)
    # JSON valid 2/3, schema valid 1/3; fields matched: vendor 2/3, total 1/3 -> pooled 3/6;
    # items with every field right: 1/3.
    # Units (matched, predicted, expected): (2, 2, 2), (1, 2, 2), (0, 0, 2).
    # Micro: 3/4 precision, 3/6 recall, F1 2*(3/8)/(5/4) = 3/5.
    # Macro: P (1 + 1/2 + 0)/3 = 1/2; R (1 + 1/2 + 0)/3 = 1/2; F1 (1 + 1/2 + 0)/3 = 1/2.
    assert metrics.pop("per_field") == pytest.approx({"total": 1 / 3, "vendor": 2 / 3})
    assert metrics == pytest.approx(
        {
            "n": 3,
            "json_valid_rate": 2 / 3,
            "schema_valid_rate": 1 / 3,
            "micro_precision": 3 / 4,
            "micro_recall": 1 / 2,
            "micro_f1": 3 / 5,
            "macro_precision": 1 / 2,
            "macro_recall": 1 / 2,
            "macro_f1": 1 / 2,
            "field_exact_match": 0.5,
            "accuracy": 1 / 3,
            "scoring_error_rate": 0.0,
        }
    )


def test_extraction_metrics_of_lists_micro_and_macro_with_a_scoring_error():
    scores = [
        score_item("extraction", '["Acme", "Globex", "Initech"]', COMPANIES, {"json_schema": ENTITIES}),
        score_item(
            "extraction",
            '[{"sku": "A-1", "qty": 2}, {"sku": "C-3", "qty": 5}]',
            [*LINE_ITEMS, {"sku": "D-4", "qty": 3}],
            {"json_schema": LINES},
        ),
        score_item("extraction", "Acme and Globex", ["Acme", "Globex"], {"json_schema": ENTITIES}),
        score_or_error("extraction", '["Acme"]', ["Acme"], {"json_schema": {"type": "nope"}}),
    ]
    metrics = extraction_metrics(scores)
    assert metrics.pop("per_field") == {}  # lists have no fields
    # Units: (3, 3, 4), (1, 2, 3), (0, 0, 2); the scoring error has none and stays out of the sums.
    # Micro: P 4/5, R 4/9, F1 2*(16/45)/(56/45) = 4/7.
    # Macro over all 4 items, the error as 0: P (1 + 1/2 + 0 + 0)/4 = 3/8; R (3/4 + 1/3)/4 = 13/48;
    # F1 (6/7 + 2/5)/4 = (30/35 + 14/35)/4 = 11/35.
    assert metrics == pytest.approx(
        {
            "n": 4,
            "json_valid_rate": 2 / 4,
            "schema_valid_rate": 2 / 4,
            "micro_precision": 4 / 5,
            "micro_recall": 4 / 9,
            "micro_f1": 4 / 7,
            "macro_precision": 3 / 8,
            "macro_recall": 13 / 48,
            "macro_f1": 11 / 35,
            "field_exact_match": None,
            "accuracy": 0.0,
            "scoring_error_rate": 1 / 4,
        }
    )


def test_extraction_metrics_empty():
    metrics = extraction_metrics([])
    assert metrics["n"] == 0 and metrics["micro_f1"] is None and metrics["macro_f1"] is None


# --- summarization ------------------------------------------------------------------------


def _direct_rouge(reference: str, prediction: str) -> dict:
    scores = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True).score(
        reference, prediction
    )
    return {name: score.fmeasure for name, score in scores.items()}


def test_rouge_hand_worked():
    score = score_item("summarization", "the cat sat", "the cat sat on the mat", {})
    # ROUGE-1: 3 shared unigrams; P 3/3, R 3/6 -> F 2/3.
    # ROUGE-2: shared bigrams "the cat", "cat sat" -> P 2/2, R 2/5 -> F 2*0.4/1.4 = 4/7.
    # ROUGE-L: LCS "the cat sat" = 3 -> same as ROUGE-1, 2/3.
    assert score.details == pytest.approx({"rouge1": 2 / 3, "rouge2": 4 / 7, "rougeL": 2 / 3})
    assert score.value == pytest.approx(2 / 3) and score.correct  # 0.667 >= default pass mark 0.3


@pytest.mark.parametrize(
    "prediction, reference",
    [
        ("The payments were delayed because the bank was closing", "Payment delayed: the bank closed."),
        ("Customer asks for a refund of the duplicated charge", "customer wants refund for double charge"),
        ("Running servers crashed", "the server runs and crashes"),  # stemming: running/runs, crashed/crashes
    ],
)
def test_rouge_matches_rouge_score(prediction, reference):
    assert score_item("summarization", prediction, reference, {}).details == pytest.approx(
        _direct_rouge(reference, prediction)
    )


@pytest.mark.parametrize("output", ["", None, "   "])
def test_rouge_of_empty_summary_is_zero(output):
    score = score_item("summarization", output, "the customer wants a refund", {})
    assert score.details == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    assert not score.correct


@pytest.mark.parametrize("threshold, correct", [(0.6, True), (0.7, False)])
def test_rouge_threshold_from_spec(threshold, correct):
    # ROUGE-L F of this pair is 2/3 (see the hand-worked test): above 0.6, below 0.7.
    score = score_item(
        "summarization", "the cat sat", "the cat sat on the mat", {"rouge_threshold": threshold}
    )
    assert score.correct is correct


def test_rouge_takes_the_best_reference():
    references = ["a dog barked at night", "the cat sat on the mat"]
    score = score_item("summarization", "the cat sat", references, {})
    assert score.value == pytest.approx(max(_direct_rouge(r, "the cat sat")["rougeL"] for r in references))


def test_summarization_metrics_are_means_of_direct_scores():
    pairs = [
        ("the cat sat", "the cat sat on the mat"),
        ("", "anything at all"),
        ("refund the double charge", "customer wants a refund for a double charge"),
    ]
    scores = [score_item("summarization", out, ref, {}) for out, ref in pairs]
    direct = [_direct_rouge(ref, out) for out, ref in pairs]
    metrics = summarization_metrics(scores)
    for name in ("rouge1", "rouge2", "rougeL"):
        assert metrics[name] == pytest.approx(np.mean([d[name] for d in direct]))
    assert metrics["rougeL_distribution"] == pytest.approx([d["rougeL"] for d in direct])


# --- QA and generation --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  an   apple, a pear  ", "apple pear"),
        ("Theory of the atom", "theory of atom"),  # only whole-word articles go
        (None, ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    "output, reference, em, f1",
    [
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
    ],
)
def test_qa_scorer(output, reference, em, f1):
    score = score_item("qa", output, reference, {})
    assert score.details == pytest.approx({"exact_match": em, "f1": f1})
    assert (score.correct, score.value) == (bool(em), pytest.approx(f1))


def test_qa_metrics_are_means():
    scores = [
        score_item("qa", out, ref, {})
        for out, ref in [("Paris", "paris"), ("in Paris, France", "Paris"), (None, "x")]
    ]
    # EM (1 + 0 + 0)/3, F1 (1 + 1/2 + 0)/3
    assert qa_metrics(scores) == pytest.approx({"n": 3, "exact_match": 1 / 3, "f1": 0.5})


@pytest.mark.parametrize(
    "output, reference, correct",
    [
        ("Thank you, the refund is on its way.", "thank you the refund is on its way", True),
        ("Thanks, the refund is on its way.", "thank you the refund is on its way", False),  # wording counts
        ("Yes", ["no", "yes"], True),
        (None, "yes", False),
    ],
)
def test_generation_is_normalised_exact_match(output, reference, correct):
    score = score_item("generation", output, reference, {})
    assert (score.correct, score.value) == (correct, float(correct))


# --- dispatch -----------------------------------------------------------------------------


def test_metrics_for_classification_uses_the_references_kept_by_the_scorer():
    pairs = [("billing", "billing"), ("refund", "billing"), ("oops", "technical")]
    scores = [score_item("classification", out, ref, {"labels": LABELS}) for out, ref in pairs]
    via_dispatch = metrics_for("classification", scores, labels=LABELS)
    assert via_dispatch == classification_metrics(
        ["billing", "billing", "technical"], ["billing", "refund", INVALID_LABEL], LABELS
    )
    assert via_dispatch["accuracy"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    "task_type, output, reference, key, expected",
    [
        ("qa", "Paris", "paris", "exact_match", 1.0),
        ("generation", "nope", "yes", "exact_match", 0.0),
        ("summarization", "the cat sat", "the cat sat on the mat", "rougeL", 2 / 3),
        ("extraction", '{"vendor": "Acme", "total": 12.5}', INVOICE, "accuracy", 1.0),
    ],
)
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
    return EvalResponse(
        run_id="r",
        item_id="i",
        model="m",
        hosting="api",
        prompt_variant="v",
        output=None if error_type else "ok",
        latency_ms=latency_ms,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=cost_usd,
        error_type=error_type,
        cached=cached,
    )


def test_operational_metrics_hand_worked():
    rows = [
        _row(100, 0.001),
        _row(200, 0.001, cached=True),
        _row(300, 0.001),
        _row(400, 0.001),
        _row(9000, None, error_type="timeout"),
    ]  # the timeout's latency must not count
    metrics = operational_metrics(rows, correct=[True, True, False, False, False])
    # Answered latencies 100..400: p50 = 250; p95 at rank 0.95*3 = 2.85 -> 300 + 0.85*100 = 385.
    # Cost 4 * 0.001 = 0.004 over 5 items -> 0.8 per 1k items; 2 correct -> 0.002 each.
    assert metrics == pytest.approx(
        {
            "n": 5,
            "answered": 4,
            "error_rate": 0.2,
            "cached_rate": 0.2,
            "latency_p50_ms": 250.0,
            "latency_p95_ms": 385.0,
            "prompt_tokens": 40,
            "completion_tokens": 20,
            "cost_usd": 0.004,
            "cost_per_1k_items": 0.8,
            "cost_per_correct": 0.002,
        }
    )


@pytest.mark.parametrize(
    "rows, correct, unknown",
    [
        (
            [_row(100, 0.001), _row(120, None)],
            [True, True],
            ["cost_usd", "cost_per_1k_items", "cost_per_correct"],
        ),
        ([_row(100, 0.001), _row(120, 0.001)], [False, False], ["cost_per_correct"]),  # not inf
        ([_row(100, 0.001)], None, ["cost_per_correct"]),
        (
            [_row(None, None, error_type="timeout")],
            [False],
            ["latency_p50_ms", "latency_p95_ms", "cost_usd", "cost_per_1k_items", "cost_per_correct"],
        ),
        ([], None, ["error_rate", "cached_rate", "latency_p50_ms", "cost_usd", "cost_per_1k_items"]),
    ],
)
def test_operational_metrics_unknown_is_none_never_zero(rows, correct, unknown):
    metrics = operational_metrics(rows, correct)
    assert {key: metrics[key] for key in unknown} == dict.fromkeys(unknown)


def test_operational_percentiles_match_numpy():
    latencies = np.random.default_rng(3).lognormal(5, 1, size=257)
    metrics = operational_metrics([_row(float(x), 0.0) for x in latencies])
    assert (metrics["latency_p50_ms"], metrics["latency_p95_ms"]) == pytest.approx(
        (np.median(latencies), np.quantile(latencies, 0.95))
    )


def test_item_score_defaults_are_not_shared():
    a, b = ItemScore(True, 1.0), ItemScore(False, 0.0)
    a.details["x"] = 1
    assert b.details == {}
