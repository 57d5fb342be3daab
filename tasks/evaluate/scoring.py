"""Scores per task type: a scorer turns (output, reference) into a per-item score, metrics
aggregate lists of them.

Scorers are small functions registered by task type (like inspect_ai's scorers); each
returns an ``ItemScore`` whose ``correct`` feeds McNemar and whose ``value`` (or a detail
such as ``rougeL`` or ``f1``) feeds the paired bootstrap of the verdict (decision.py).

    task type       value              correct                     details
    classification  1/0                label matches               reference
    extraction      element F1         the whole value matches     json_valid, schema_valid, precision,
                                                                   recall, f1, counts, fields
    summarization   ROUGE-L F          ROUGE-L F >= threshold      rouge1, rouge2, rougeL
    qa              token F1 (best)    exact match (any ref)       exact_match, f1
    generation      1/0                exact match (normalised)    exact_match

A scorer that raises on one item (an odd reference, a schema jsonschema cannot read) is that
item's ``scoring_error`` through :func:`score_or_error`, never the end of a run.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Sequence

INVALID_LABEL = "<invalid>"
SCORING_ERROR = "scoring_error"  # the error class of an item its scorer could not score


@dataclass
class ItemScore:
    correct: bool
    value: float  # 1/0 for exact tasks, a continuous score (F1, ROUGE) otherwise
    prediction: Any = None
    details: dict = field(default_factory=dict)
    error: str | None = None  # "<ExceptionType>: message" when the scorer failed on this item


Scorer = Callable[[str | None, Any, dict], ItemScore]
SCORERS: dict[str, Scorer] = {}


def scorer(task_type: str):
    def register(function: Scorer) -> Scorer:
        SCORERS[task_type] = function
        return function

    return register


def score_item(task_type: str, output: str | None, reference: Any, spec: dict | None = None) -> ItemScore:
    """Score one output; ``spec`` carries what the task needs (labels, json_schema, list_order)."""
    return _scorer_for(task_type, spec)(output, reference, spec or {})


def score_or_error(task_type: str, output: str | None, reference: Any, spec: dict | None = None) -> ItemScore:
    """:func:`score_item`, but an exception of the scorer on this item becomes the item's score:
    wrong, worth 0, with the error kept. An unknown task type or option still raises: that is the
    plan's mistake, the same for every item, and must not pass as a run of zeros."""
    scorer_function = _scorer_for(task_type, spec)
    try:
        return scorer_function(output, reference, spec or {})
    except Exception as error:  # whatever the scorer's bug, it stays with its item
        # The first line only: jsonschema's messages go on to print the whole schema.
        message = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
        return ItemScore(
            correct=False, value=0.0, prediction=None, details={SCORING_ERROR: message}, error=message
        )


def _scorer_for(task_type: str, spec: dict | None) -> Scorer:
    if task_type not in SCORERS:
        raise ValueError(f"no scorer for task type {task_type!r} (known: {sorted(SCORERS)})")
    check_spec(spec or {})
    return SCORERS[task_type]


def check_spec(spec: dict) -> None:
    """Options a scorer reads from its spec, checked before any item is scored."""
    order = spec.get("list_order") or DEFAULT_LIST_ORDER
    if order not in LIST_ORDERS:
        raise ValueError(f"list_order {order!r} is not one of: {', '.join(LIST_ORDERS)}")


_STRIP = string.punctuation + string.whitespace + "“”‘’"


def parse_label(output: str | None, labels: list[str]) -> str:
    """The label an output names: the whole answer (case, quotes and punctuation aside),
    or a JSON object with one string value. Anything else is invalid, never a guess."""
    if not output:
        return INVALID_LABEL
    text = output.strip()
    by_norm = {label.casefold(): label for label in labels}
    candidate = text.strip(_STRIP).casefold()
    if candidate in by_norm:
        return by_norm[candidate]
    parsed = parse_json_object(text)
    if parsed is not None and len(parsed) == 1:
        value = str(next(iter(parsed.values()))).strip(_STRIP).casefold()
        return by_norm.get(value, INVALID_LABEL)
    return INVALID_LABEL


@scorer("classification")
def score_classification(output: str | None, reference: Any, spec: dict) -> ItemScore:
    prediction = parse_label(output, spec.get("labels") or [str(reference)])
    correct = prediction == reference
    # The reference travels with the score so metrics_for can build the confusion matrix.
    return ItemScore(
        correct=correct, value=float(correct), prediction=prediction, details={"reference": reference}
    )


NOT_JSON = object()  # parse_json's answer for text that is not JSON (``null`` is JSON: None)


def parse_json(text: str | None) -> Any:
    """The JSON value of an output (object, array or scalar), tolerating a fenced code block
    around it; ``NOT_JSON`` when there is none (None is the JSON ``null``)."""
    if not text:
        return NOT_JSON
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    candidate = fenced.group(1) if fenced else text
    try:
        return json.loads(candidate.strip())
    except (json.JSONDecodeError, ValueError):
        return NOT_JSON


def parse_json_object(text: str | None) -> dict | None:
    """A JSON object from the output, tolerating a fenced code block around it."""
    value = parse_json(text)
    return value if isinstance(value, dict) else None


# --- extraction: element-level matching of any JSON shape ----------------------------------
#
# An answer is counted in units, once per shape, and P/R/F1 compare the units of the output
# with those of the reference:
#   scalar  one unit (none for null);
#   object  the units of each field, field by field, so nested objects count their leaves
#           ("address.city"); a field missing or null on one side has the other side's units
#           unmatched (null and absent are the same answer: the schema says whether a field
#           must be present, the content scores say whether it is right);
#   list    one unit per non-null element, as a multiset (duplicates count as often as they
#           occur), or, with ``list_order: ordered``, along the longest common subsequence (an
#           element inserted or dropped costs that element, not every one after it). An element
#           that is an object or a list is one unit, matched whole on its normalised form: a line
#           item is right only with all its fields, since pooling fields across elements would
#           credit the quantity of one line paired with the product of another.
# Values compare after normalisation: text case-folded with runs of whitespace made one
# space; numbers, and text that reads as a number ("1,250.50"), by value; booleans as
# "true"/"false". Object keys are compared as written.
# Shapes that differ (a list where the reference has an object) match nothing.

LIST_ORDERS = ("multiset", "ordered")
DEFAULT_LIST_ORDER = "multiset"
_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def normalize_value(value: Any, ordered: bool = False) -> Any:
    """A hashable normal form: equal forms are the same answer (see the notes above)."""
    if isinstance(value, dict):
        return tuple(
            sorted((key, normalize_value(item, ordered)) for key, item in value.items() if item is not None)
        )
    if isinstance(value, list):
        elements = [normalize_value(item, ordered) for item in value if item is not None]
        return tuple(elements if ordered else sorted(elements, key=repr))
    if value is None or isinstance(value, bool):
        return None if value is None else str(value).casefold()
    if isinstance(value, (int, float)):
        return round(float(value), 6)  # equal to six decimals: 12.5 == 12.50 == "12.5"
    text = " ".join(str(value).split()).casefold()
    return round(float(text.replace(",", "")), 6) if _NUMBER.fullmatch(text) else text


def _units(value: Any) -> int:
    if isinstance(value, dict):
        return sum(_units(item) for item in value.values())
    if isinstance(value, list):
        return sum(item is not None for item in value)
    return int(value is not None)


def match_counts(predicted: Any, expected: Any, ordered: bool = False) -> tuple[int, int, int]:
    """(matched, predicted, expected) units of an answer against its reference."""
    if isinstance(expected, dict) and isinstance(predicted, dict):
        totals = [
            match_counts(predicted.get(key), expected.get(key), ordered)
            for key in expected.keys() | predicted
        ]
        return tuple(map(sum, zip(*totals))) if totals else (0, 0, 0)
    if isinstance(expected, list) and isinstance(predicted, list):
        mine, theirs = (
            [normalize_value(v, ordered) for v in side if v is not None] for side in (predicted, expected)
        )
        matched = (
            _common_subsequence(mine, theirs) if ordered else sum((Counter(mine) & Counter(theirs)).values())
        )
        return matched, len(mine), len(theirs)
    if isinstance(expected, (dict, list)) or isinstance(predicted, (dict, list)):
        return 0, _units(predicted), _units(expected)
    same = predicted is not None and normalize_value(predicted) == normalize_value(expected)
    return int(same), _units(predicted), _units(expected)


def _common_subsequence(left: list, right: list) -> int:
    """Length of the longest common subsequence (dynamic programming, one row kept)."""
    previous = [0] * (len(right) + 1)
    for a in left:
        current = [0]
        for j, b in enumerate(right):
            current.append(previous[j] + 1 if a == b else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def prf(matched: int, predicted: int, expected: int) -> tuple[float, float, float]:
    """Precision, recall, F1 of unit counts. Two empty answers agree (1, 1, 1); otherwise a
    ratio with nothing to divide by is 0, as scikit-learn's ``zero_division=0``."""
    if predicted == expected == 0:
        return 1.0, 1.0, 1.0
    precision = matched / predicted if predicted else 0.0
    recall = matched / expected if expected else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def field_matches(answer: Any, expected: Any, ordered: bool = False, path: tuple = ()) -> dict[str, bool]:
    """Whether each field of an object reference is matched whole, by dotted path down to the
    leaves ("address.city"); a list is a leaf at its path."""
    if not isinstance(expected, dict) or (path and not expected):
        matched, n_answer, n_expected = match_counts(answer, expected, ordered)
        return {".".join(path): matched == n_answer == n_expected}
    fields: dict[str, bool] = {}
    for key, value in expected.items():
        fields.update(
            field_matches(
                answer.get(key) if isinstance(answer, dict) else None, value, ordered, (*path, str(key))
            )
        )
    return fields


def expected_value(reference: Any) -> Any:
    """The reference as a JSON value: text is JSON decoded once (text that is not JSON is a
    plain string value); a value already decoded (a list, an object) is used as it is."""
    if not isinstance(reference, str):
        return reference
    try:
        return json.loads(reference)
    except ValueError:
        return reference


@scorer("extraction")
def score_extraction(output: str | None, reference: Any, spec: dict) -> ItemScore:
    """JSON validity, schema validity and element-level P/R/F1 for any JSON shape (see above);
    correct = the whole value matches, value = F1. ``spec["list_order"]``: multiset | ordered."""
    expected = expected_value(reference)
    ordered = (spec.get("list_order") or DEFAULT_LIST_ORDER) == "ordered"
    parsed = parse_json(output)
    valid = parsed is not NOT_JSON
    answer = parsed if valid else None
    counts = match_counts(answer, expected, ordered) if valid else (0, 0, _units(expected))
    precision, recall, f1 = prf(*counts) if valid else (0.0, 0.0, 0.0)
    fields = (
        {path: valid and matched for path, matched in field_matches(answer, expected, ordered).items()}
        if isinstance(expected, dict)
        else {}
    )
    schema_valid = valid and _schema_valid(answer, spec.get("json_schema"))
    return ItemScore(
        correct=valid and counts[0] == counts[1] == counts[2],
        value=f1,
        prediction=answer,
        details={
            "json_valid": valid,
            "schema_valid": schema_valid,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "fields": fields,
            "counts": dict(zip(("matched", "predicted", "expected"), counts)),
        },
    )


def _schema_valid(value: Any, schema: dict | None) -> bool:
    if not schema:
        return True
    return _validator(json.dumps(schema, sort_keys=True)).is_valid(value)


@lru_cache(maxsize=32)
def _validator(schema_json: str):
    """One compiled validator per schema: a run scores the same schema a thousand times."""
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads(schema_json))


# --- summarization, QA, generation --------------------------------------------------------

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
DEFAULT_ROUGE_THRESHOLD = 0.3  # ROUGE-L F at or above which a summary counts as "correct"


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def _references(reference: Any) -> list[str]:
    """One reference or several (a list): QA and summaries often have more than one good answer."""
    if isinstance(reference, (list, tuple)):
        return [str(ref) for ref in reference]
    return [str(reference)]


@scorer("summarization")
def score_summarization(output: str | None, reference: Any, spec: dict) -> ItemScore:
    """ROUGE-1/2/L F-measure (stemmed) against the best of the references; value = ROUGE-L F.

    ``correct`` means ROUGE-L F >= ``spec["rouge_threshold"]`` (default 0.3), a coarse pass
    mark that lets McNemar run on summaries too. An empty or missing output scores 0.
    """
    threshold = float(spec.get("rouge_threshold", DEFAULT_ROUGE_THRESHOLD))
    # score_multi keeps, per ROUGE type, the reference with the highest F-measure.
    scores = _rouge_scorer().score_multi(_references(reference), output or "")
    details = {name: float(scores[name].fmeasure) for name in ROUGE_TYPES}
    return ItemScore(
        correct=details["rougeL"] >= threshold, value=details["rougeL"], prediction=output, details=details
    )


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str | None) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in (text or "").lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str | None, reference: str) -> float:
    """SQuAD token F1 over normalised tokens; two empty answers agree (F1 = 1), one empty scores 0."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    overlap = sum((Counter(predicted) & Counter(expected)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(expected)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str | None, reference: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(reference)


@scorer("qa")
def score_qa(output: str | None, reference: Any, spec: dict) -> ItemScore:
    """Exact match and token F1, each the best over the references (SQuAD); correct = EM, value = F1."""
    references = _references(reference)
    em = any(exact_match(output, ref) for ref in references)
    f1 = max(token_f1(output, ref) for ref in references)
    return ItemScore(correct=em, value=f1, prediction=output, details={"exact_match": float(em), "f1": f1})


@scorer("generation")
def score_generation(output: str | None, reference: Any, spec: dict) -> ItemScore:
    """Fallback for open generation: exact match after SQuAD normalisation against any reference.

    Strict on purpose: free text that differs in wording scores 0, so verdicts on this task type
    are conservative until a better metric (a judge) is configured.
    """
    em = any(exact_match(output, ref) for ref in _references(reference))
    return ItemScore(correct=em, value=float(em), prediction=output, details={"exact_match": float(em)})


# --- aggregate metrics: plain functions over lists -----------------------------------------


def _mean(values: Sequence[float]) -> float | None:
    """The mean, or None for no values: an empty run has no score, not a score of 0."""
    return float(sum(values) / len(values)) if len(values) else None


def classification_metrics(
    references: Sequence[str], predictions: Sequence[str], labels: Sequence[str]
) -> dict:
    """Accuracy, macro precision/recall/F1, per-label scores and the confusion matrix.

    An invalid prediction (``INVALID_LABEL``, or any string outside ``labels``) is a wrong answer
    of an extra class: it lowers accuracy and the recall of the true label, but as a class of its
    own it is left out of the macro average. The macro average runs over the known labels present
    in the references or predictions: a label absent from both has no defined precision or recall,
    and counting it as 0 would mark a perfect answer on a one-class sample down to 1/len(labels).
    The confusion matrix always ends with an ``INVALID_LABEL`` column (and an all-zero row).
    """
    references, labels = list(references), list(labels)
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references but {len(predictions)} predictions")
    unknown = sorted(set(references) - set(labels))
    if unknown:
        raise ValueError(f"references {unknown} are not among the labels {labels}")
    predictions = [p if p in labels else INVALID_LABEL for p in predictions]
    return {
        "n": len(references),
        "accuracy": _mean([r == p for r, p in zip(references, predictions)]),
        "invalid_rate": _mean([p == INVALID_LABEL for p in predictions]),
        **_macro_scores(references, predictions, labels),
        "confusion_matrix": _confusion(references, predictions, labels),
    }


def _macro_scores(references: list[str], predictions: list[str], labels: list[str]) -> dict:
    from sklearn.metrics import precision_recall_fscore_support

    present = [label for label in labels if label in set(references) | set(predictions)]
    if not present:
        return {"macro_precision": None, "macro_recall": None, "macro_f1": None, "per_label": {}}
    # labels= restricts the columns but keeps every row, so invalid answers still cost recall.
    p, r, f, support = precision_recall_fscore_support(
        references, predictions, labels=present, zero_division=0
    )
    per_label = {
        label: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(present)
    }
    return {
        "macro_precision": float(p.mean()),
        "macro_recall": float(r.mean()),
        "macro_f1": float(f.mean()),
        "per_label": per_label,
    }


def _confusion(references: list[str], predictions: list[str], labels: list[str]) -> dict:
    from sklearn.metrics import confusion_matrix

    order = [*labels, INVALID_LABEL]
    if not references:
        return {"labels": order, "matrix": [[0] * len(order) for _ in order]}
    matrix = confusion_matrix(references, predictions, labels=order)
    return {"labels": order, "matrix": matrix.tolist()}  # rows: reference, columns: prediction


def extraction_metrics(scores: Sequence[ItemScore]) -> dict:
    """JSON and schema validity rates, element-level precision/recall/F1 both micro (units of
    every item pooled: long answers weigh more) and macro (the mean of the items' own scores,
    the per-item numbers the verdict's bootstrap resamples), field exact match (over all fields
    pooled), per-field match rates and item accuracy (the whole value right).

    An item its scorer failed on counts as wrong and 0 in the rates and macro means; its units
    are unknown, so it is left out of the micro sums and counted in ``scoring_error_rate``."""
    fields: dict[str, list[bool]] = defaultdict(list)
    for score in scores:
        for name, matched in score.details.get("fields", {}).items():
            fields[name].append(bool(matched))
    pooled = [matched for values in fields.values() for matched in values]
    return {
        "n": len(scores),
        "json_valid_rate": _mean([bool(s.details.get("json_valid")) for s in scores]),
        "schema_valid_rate": _mean([bool(s.details.get("schema_valid")) for s in scores]),
        **_micro_prf(scores),
        **{
            f"macro_{name}": _mean([float(s.details.get(name, 0.0)) for s in scores])
            for name in ("precision", "recall", "f1")
        },
        "field_exact_match": _mean(pooled),
        "per_field": {name: _mean(values) for name, values in sorted(fields.items())},
        "accuracy": _mean([s.correct for s in scores]),
        "scoring_error_rate": _mean([s.error is not None for s in scores]),
    }


def _micro_prf(scores: Sequence[ItemScore]) -> dict:
    counted = [s.details["counts"] for s in scores if "counts" in s.details]
    if not counted:
        return {"micro_precision": None, "micro_recall": None, "micro_f1": None}
    totals = [sum(c[key] for c in counted) for key in ("matched", "predicted", "expected")]
    return dict(zip(("micro_precision", "micro_recall", "micro_f1"), prf(*totals)))


def summarization_metrics(scores: Sequence[ItemScore]) -> dict:
    """Mean ROUGE-1/2/L F, the share above the pass mark, and the ROUGE-L values for a histogram."""
    means = {name: _mean([s.details[name] for s in scores]) for name in ROUGE_TYPES}
    return {
        "n": len(scores),
        **means,
        "pass_rate": _mean([s.correct for s in scores]),
        "rougeL_distribution": [s.details["rougeL"] for s in scores],
    }


def qa_metrics(scores: Sequence[ItemScore]) -> dict:
    return {
        "n": len(scores),
        "exact_match": _mean([s.details["exact_match"] for s in scores]),
        "f1": _mean([s.details["f1"] for s in scores]),
    }


def generation_metrics(scores: Sequence[ItemScore]) -> dict:
    return {"n": len(scores), "exact_match": _mean([s.details["exact_match"] for s in scores])}


def operational_metrics(rows: Sequence[Any], correct: Sequence[bool] | None = None) -> dict:
    """Latency p50/p95 of answered calls, error rate, tokens and cost of ``EvalResponse`` rows.

    Cost is known when every answered row has one (a failed call without a cost is taken as
    unbilled); otherwise the cost figures are None, never 0. ``cost_per_correct`` needs the
    per-row ``correct`` flags and at least one correct answer, else it is None, never inf.
    """
    answered = [row for row in rows if row.error_type is None]
    total_cost = _total_cost(rows, answered)
    n_correct = sum(bool(c) for c in correct) if correct is not None else None
    return {
        "n": len(rows),
        "answered": len(answered),
        "error_rate": 1 - len(answered) / len(rows) if rows else None,
        "cached_rate": _mean([bool(row.cached) for row in rows]),
        **_latency_percentiles(answered),
        "prompt_tokens": sum(row.prompt_tokens or 0 for row in rows),
        "completion_tokens": sum(row.completion_tokens or 0 for row in rows),
        "cost_usd": total_cost,
        "cost_per_1k_items": total_cost / len(rows) * 1000 if total_cost is not None and rows else None,
        "cost_per_correct": total_cost / n_correct if total_cost is not None and n_correct else None,
    }


def _total_cost(rows: Sequence[Any], answered: Sequence[Any]) -> float | None:
    if not answered or any(row.cost_usd is None for row in answered):
        return None
    return float(sum(row.cost_usd for row in rows if row.cost_usd is not None))


def _latency_percentiles(answered: Sequence[Any]) -> dict:
    import numpy as np

    latencies = [row.latency_ms for row in answered if row.latency_ms is not None]
    if not latencies:
        return {"latency_p50_ms": None, "latency_p95_ms": None}
    # numpy's default (linear interpolation between closest ranks), so reports can recompute it.
    p50, p95 = np.percentile(latencies, [50, 95])
    return {"latency_p50_ms": float(p50), "latency_p95_ms": float(p95)}


def metrics_for(
    task_type: str,
    scores: Sequence[ItemScore],
    *,
    references: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
) -> dict:
    """Aggregate metrics of one task type. Classification needs the references and label set;
    references default to those the classification scorer kept in each score's details."""
    if task_type == "classification":
        references = references if references is not None else [s.details["reference"] for s in scores]
        return classification_metrics(references, [s.prediction for s in scores], labels or [])
    aggregate = {
        "extraction": extraction_metrics,
        "summarization": summarization_metrics,
        "qa": qa_metrics,
        "generation": generation_metrics,
    }.get(task_type)
    if aggregate is None:
        raise ValueError(f"no metrics for task type {task_type!r} (known: {sorted(SCORERS)})")
    return aggregate(scores)
