"""LLM-as-judge: pairwise and rubric scorers, their statistics, and calibration before trust.

A use case's ``judge:`` section (``workhorse.config.JudgePlan``) names the judge model and its kind:

- ``pairwise``: the judge sees the request, the reference when there is one, and the incumbent's
  and the candidate's answers. Every pair is judged in both orders (incumbent as A, then as B);
  two orders that disagree make a tie, counted as position-inconsistent. A candidate's failed call
  is a loss without asking the judge (a failure in production is one); an incumbent's failure
  leaves the item out, as in the reference-based verdict.
- ``rubric``: each answer (incumbent and candidates) is graded alone on a 1..scale rubric.

Judge calls are ``ModelRequest`` rows through the one runner (limits, retries, cache,
checkpoint, cost); the answer is constrained (a JSON schema, or vLLM's ``choice`` for a local
engine) and anything else is the error class ``judge_unparseable``, never a score.

Before its verdict is trusted the judge is calibrated: agreement with human preference labels
(``human_labels``), else with the reference where the reference decides (pairwise: pairs where
one answer is correct and the other not; rubric: Spearman correlation with the reference
metric), and its position consistency. Below the plan's thresholds, or without enough
evidence to measure, the verdict is ``inconclusive`` and says why.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from string import Template
from typing import Sequence

from workhorse.config import JudgePlan, Plan
from workhorse.errors import ConfigError
from workhorse.tasks.common.runner import EvalResponse, ModelRequest, ModelSpec

JUDGE_UNPARSEABLE = "judge_unparseable"
EMBEDDED_JUDGE = "embedded"
PROMPTS = Path(__file__).parent / "judge_prompts"
PAIRWISE_CHOICES = ("A", "B", "tie")
DEFAULT_RUBRIC = (
    "The answer does what the request asks: it is correct, complete and faithful to the request "
    "and to the reference answer when one is given; it invents nothing."
)
NO_REFERENCE = "(no reference answer)"
# What each order's verdict means for the candidate: in "AB" the incumbent is A, in "BA" it is B.
OUTCOME = {
    "AB": {"A": "loss", "B": "win", "tie": "tie"},
    "BA": {"A": "win", "B": "loss", "tie": "tie"},
}
SCORE = {"win": 1.0, "tie": 0.5, "loss": 0.0}


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class JudgePrompts:
    """The judge's template and rubric, as the plan chose them (shipped files unless overridden)."""

    template: Template
    rubric: str

    @classmethod
    def from_plan(cls, judge: JudgePlan, folder: Path | None) -> "JudgePrompts":
        template = _read(judge.prompt_file, folder) if judge.prompt_file else None
        template = template or (PROMPTS / f"{judge.kind}.txt").read_text(encoding="utf-8")
        needed = {"pairwise": ("$answer_a", "$answer_b"), "rubric": ("$answer",)}[judge.kind]
        missing = [name for name in needed if name not in template]
        if missing:
            raise ConfigError(f"judge prompt {judge.prompt_file}: the template lacks {', '.join(missing)}")
        rubric = judge.rubric or (_read(judge.rubric_file, folder) if judge.rubric_file else DEFAULT_RUBRIC)
        return cls(Template(template), rubric.strip())

    def render(self, judge: JudgePlan, text: str, reference, **answers: str) -> list[dict]:
        values = {
            "input": text,
            "reference": _text(reference) or NO_REFERENCE,
            "rubric": self.rubric,
            "scale": str(judge.scale),
            **{name: answer or "" for name, answer in answers.items()},
        }
        return [{"role": "user", "content": self.template.safe_substitute(values)}]


def _read(name: str, folder: Path | None) -> str:
    path = Path(name) if Path(name).is_absolute() or folder is None else folder / name
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"judge: cannot read {path}: {error.strerror or error}") from None


def _text(value) -> str:
    if value is None or value == "":
        return ""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


# --------------------------------------------------------------------------- requests


def judge_spec(judge: JudgePlan, plan: Plan, workspace_root: Path | None = None) -> ModelSpec:
    """The judge as the runner calls it, priced by the plan's catalog and held to the plan's limits
    like any candidate; its label starts with "judge" so its rows never mix with a contender's."""
    from workhorse.tasks.common.engines import EMBEDDED_LITELLM
    from workhorse.tasks.common.pricing import plan_catalog
    from workhorse.tasks.evaluate.run import candidate_spec

    if judge.model == EMBEDDED_JUDGE:  # priced like a self-hosted candidate: GPU rent over throughput
        catalog = plan_catalog(plan, workspace_root, also_self_hosted=[EMBEDDED_LITELLM])
        spec = candidate_spec(
            EMBEDDED_LITELLM, "self_hosted", judge.api_base, catalog, plan.limits_for(EMBEDDED_LITELLM)
        )
    else:
        catalog = plan_catalog(plan, workspace_root)
        spec = candidate_spec(judge.model, "api", judge.api_base, catalog, plan.limits_for(judge.model))
    return replace(spec, name=f"judge {judge.model}")


def constraint(judge: JudgePlan, spec: ModelSpec) -> dict:
    """The constrained-decoding parameters of a judgement, as the eval's constrained variant passes
    them: vLLM's ``choice`` for a local engine, a JSON schema for an API."""
    if judge.kind == "pairwise":
        choices = list(PAIRWISE_CHOICES)
        schema = {"type": "object", "properties": {"winner": {"type": "string", "enum": choices}}}
    else:
        choices = [str(grade) for grade in range(1, judge.scale + 1)]
        schema = {
            "type": "object",
            "properties": {"score": {"type": "integer", "minimum": 1, "maximum": judge.scale}},
        }
    schema |= {"required": list(schema["properties"]), "additionalProperties": False}
    if spec.hosting in ("self_hosted", "batch"):
        return {"extra_body": {"structured_outputs": {"choice": choices}}}
    name = "judgement"
    return {"response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}}


@dataclass(frozen=True)
class Subject:
    """One thing to judge: an item's request and reference and the answers of the arms compared."""

    item_id: str
    text: str
    reference: object
    answers: dict[str, str]  # arm -> answer ("incumbent", "candidate"; "A"/"B" for human-labelled pairs)


def pairwise_requests(
    judge: JudgePlan, spec: ModelSpec, prompts: JudgePrompts, subjects: Sequence[Subject], tag: str
) -> list[ModelRequest]:
    """Both orders of every pair: ``<tag>|AB`` shows the first arm as A, ``<tag>|BA`` as B."""
    params = {"temperature": 0.0, "max_tokens": 32, **constraint(judge, spec)}
    requests = []
    for subject in subjects:
        first, second = list(subject.answers.values())
        for order, (a, b) in (("AB", (first, second)), ("BA", (second, first))):
            messages = prompts.render(judge, subject.text, subject.reference, answer_a=a, answer_b=b)
            requests.append(ModelRequest(subject.item_id, spec, messages, params, f"{tag}|{order}"))
    return requests


def rubric_requests(
    judge: JudgePlan, spec: ModelSpec, prompts: JudgePrompts, subjects: Sequence[Subject], tag: str
) -> list[ModelRequest]:
    params = {"temperature": 0.0, "max_tokens": 16, **constraint(judge, spec)}
    return [
        ModelRequest(
            subject.item_id,
            spec,
            prompts.render(judge, subject.text, subject.reference, answer=subject.answers["answer"]),
            params,
            tag,
        )
        for subject in subjects
    ]


# --------------------------------------------------------------------------- parsing


def parse_pairwise(output: str | None) -> str | None:
    """A, B or tie from ``{"winner": ...}`` or the bare choice; None for anything else."""
    value = _field(output, "winner")
    by_lower = {choice.lower(): choice for choice in PAIRWISE_CHOICES}
    return by_lower.get(str(value).strip().lower()) if value is not None else None


def parse_grade(output: str | None, scale: int) -> int | None:
    """A whole grade in 1..scale from ``{"score": n}`` or the bare number; None for anything else."""
    value = _field(output, "score")
    if isinstance(value, bool):
        return None
    try:
        grade = int(str(value).strip()) if not isinstance(value, float) else value
    except ValueError:
        return None
    return int(grade) if grade == int(grade) and 1 <= grade <= scale else None


def _field(output: str | None, key: str):
    text = (output or "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value.get(key) if isinstance(value, dict) else value


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class PairOutcome:
    """One pair's resolved judgement, from the second arm's side: the candidate's (answer B's, for
    human-labelled pairs)."""

    item_id: str
    outcome: str | None  # win | tie | loss; None when the judgement failed
    consistent: bool | None = None  # both orders agreed; None when not judged in two orders
    error_type: str | None = None
    orders: tuple[str | None, str | None] = (None, None)  # what the judge said in AB and in BA


def resolve_pair(item_id: str, ab: EvalResponse | None, ba: EvalResponse | None) -> PairOutcome:
    """Two orders -> one outcome: agreeing orders give their outcome, disagreeing ones a tie."""
    said = []
    for order, row in (("AB", ab), ("BA", ba)):
        if row is None or row.error_type:
            return PairOutcome(item_id, None, error_type=(row.error_type if row else "not_judged"))
        choice = parse_pairwise(row.output)
        if choice is None:
            return PairOutcome(item_id, None, error_type=JUDGE_UNPARSEABLE)
        said.append((choice, OUTCOME[order][choice]))
    (first, first_outcome), (second, second_outcome) = said
    if first_outcome == second_outcome:
        return PairOutcome(item_id, first_outcome, True, orders=(first, second))
    return PairOutcome(item_id, "tie", False, orders=(first, second))


@dataclass(frozen=True)
class Grade:
    item_id: str
    arm: str
    grade: int | None
    error_type: str | None = None

    def normalised(self, scale: int) -> float:
        return (self.grade - 1) / (scale - 1)


def grade_of(item_id: str, arm: str, row: EvalResponse | None, scale: int) -> Grade:
    if row is None or row.error_type:
        return Grade(item_id, arm, None, row.error_type if row else "not_judged")
    grade = parse_grade(row.output, scale)
    return Grade(item_id, arm, grade, None if grade is not None else JUDGE_UNPARSEABLE)


# --------------------------------------------------------------------------- statistics


def pairwise_table(
    outcomes: Sequence[PairOutcome], *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> dict:
    """Win/tie/loss counts, the win rate (a tie counts half) with its bootstrap CI over the paired
    scores, and the sign test (wins against losses, ties left out) — judgement failures counted apart."""
    judged = [o for o in outcomes if o.outcome is not None]
    counts = Counter(o.outcome for o in judged)
    wins, ties, losses = counts["win"], counts["tie"], counts["loss"]
    low, high = win_rate_interval(
        [SCORE[o.outcome] for o in judged], confidence=confidence, n_resamples=n_resamples, seed=seed
    )
    paired = [o for o in judged if o.consistent is not None]
    return {
        "n": len(judged),
        "wins": wins,
        "ties": ties,
        "losses": losses,
        "win_rate": (wins + ties / 2) / len(judged) if judged else None,
        "ci_low": low,
        "ci_high": high,
        "sign_test_p": sign_test(wins, losses),
        "position_inconsistent": sum(o.consistent is False for o in paired),
        "position_inconsistency": (
            sum(o.consistent is False for o in paired) / len(paired) if paired else None
        ),
        "errors": dict(Counter(o.error_type for o in outcomes if o.outcome is None)),
    }


def win_rate_interval(
    scores: Sequence[float], *, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float | None, float | None]:
    """Percentile bootstrap CI of the mean paired score (win 1, tie ½, loss 0): the win rate's."""
    from workhorse.tasks.evaluate.decision import paired_bootstrap

    if not scores:
        return None, None
    _, low, high = paired_bootstrap(
        scores, [0.0] * len(scores), n_resamples=n_resamples, confidence=confidence, seed=seed
    )
    return low, high


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test of wins against losses (ties carry no sign)."""
    from scipy import stats

    return 1.0 if wins + losses == 0 else float(stats.binomtest(wins, wins + losses, 0.5).pvalue)


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Rank correlation; a judge whose grades never vary tells nothing (0), a constant reference
    cannot be correlated with (None)."""
    from scipy import stats

    if len(x) < 3 or len(set(y)) < 2:
        return None
    if len(set(x)) < 2:
        return 0.0
    value = float(stats.spearmanr(x, y).statistic)
    return None if math.isnan(value) else value


# --------------------------------------------------------------------------- human labels


def read_human_labels(path: Path) -> list[dict]:
    """Human preference labels: CSV or JSONL rows with input, answer_a, answer_b, preferred (A, B or
    tie) and an optional reference. A bad row is an error naming it, never skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"judge.human_labels: cannot read {path}: {error.strerror or error}") from None
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        rows = list(csv.DictReader(text.splitlines()))
    for number, row in enumerate(rows, 1):
        missing = [k for k in ("input", "answer_a", "answer_b", "preferred") if not row.get(k)]
        preferred = str(row.get("preferred", "")).strip()
        if missing or preferred.lower() not in ("a", "b", "tie"):
            raise ConfigError(
                f"judge.human_labels {path} row {number}: needs input, answer_a, answer_b and "
                f"preferred = A, B or tie (missing {missing or 'none'}, preferred {preferred!r})"
            )
    return rows


def human_subjects(rows: Sequence[dict]) -> list[Subject]:
    return [
        Subject(
            f"human-{number}-" + hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest()[:8],
            str(row["input"]),
            row.get("reference") or None,
            {"A": str(row["answer_a"]), "B": str(row["answer_b"])},
        )
        for number, row in enumerate(rows, 1)
    ]


def human_preference(row: dict) -> str:
    """The label as an outcome for answer B: outcomes are the second arm's (the candidate's, in
    eval pairs), and a labelled pair's second arm is its answer B."""
    return {"a": "loss", "b": "win", "tie": "tie"}[str(row["preferred"]).strip().lower()]


# --------------------------------------------------------------------------- the judged run


@dataclass
class JudgeRun:
    """What the judge said in one eval run: its rows (cost, errors) and the resolved judgements."""

    judge: JudgePlan
    spec: ModelSpec
    rows: list[EvalResponse] = field(default_factory=list)
    pairs: dict[str, list[PairOutcome]] = field(default_factory=dict)  # candidate label -> outcomes
    grades: list[Grade] = field(default_factory=list)
    arms: dict[str, tuple[str, str]] = field(default_factory=dict)  # arm -> (model label, variant)
    contenders: dict[str, tuple[str, str]] = field(default_factory=dict)  # arm -> (model, hosting)
    failed_calls: dict[str, set[str]] = field(default_factory=dict)  # arm -> items its call failed on
    human_labels: list[dict] = field(default_factory=list)
    human: list[tuple[PairOutcome, str]] = field(default_factory=list)  # (judged, human's outcome)

    @property
    def cost_usd(self) -> float | None:
        """What the judge's calls cost (cached answers cost nothing again); None when unpriced."""
        paid = [r for r in self.rows if not r.cached and r.error_type is None]
        if any(r.cost_usd is None for r in paid):
            return None
        return sum(r.cost_usd for r in paid)


def judge_answers(
    plan: Plan,
    use_case: str,
    items,
    incumbent,
    candidates,
    chosen: dict,
    test_rows: Sequence[EvalResponse],
    workspace_root: Path | None = None,
) -> tuple[JudgeRun, list[ModelRequest]]:
    """The judge's requests for the test answers (and the human-labelled pairs): what to send."""
    judge = plan.use_cases[use_case].judge
    spec = judge_spec(judge, plan, workspace_root)
    prompts = JudgePrompts.from_plan(judge, plan.folder)
    run = JudgeRun(judge, spec)
    by_item = {item.item_id: item for item in items}
    answers = _answers_by_arm(test_rows)
    run.arms["incumbent"] = (incumbent.spec.label, _variant(answers, incumbent.spec.label))
    for contender in candidates:
        label = contender.spec.label
        run.arms[label] = (label, chosen[(label, contender.spec.hosting)][0])
        run.contenders[label] = (contender.spec.model, contender.spec.hosting)
    requests = (
        _pairwise(run, prompts, by_item, answers)
        if judge.kind == "pairwise"
        else _rubric(run, prompts, by_item, answers)
    )
    if judge.human_labels:
        run.human_labels = read_human_labels((plan.folder or Path.cwd()) / judge.human_labels)
        subjects = human_subjects(run.human_labels)
        requests += pairwise_requests(judge, spec, prompts, subjects, "human")
    return run, requests


def _answers_by_arm(rows: Sequence[EvalResponse]) -> dict[tuple[str, str], dict[str, EvalResponse]]:
    answers: dict[tuple[str, str], dict[str, EvalResponse]] = defaultdict(dict)
    for row in rows:
        answers[(row.model, row.prompt_variant)][row.item_id] = row
    return answers


def _variant(answers: dict, label: str) -> str:
    from workhorse.tasks.evaluate.matrix import AS_LOGGED

    return next((variant for model, variant in answers if model == label), AS_LOGGED)


def _pairwise(run: JudgeRun, prompts: JudgePrompts, by_item: dict, answers: dict) -> list[ModelRequest]:
    """Incumbent (A in "AB") against each candidate's chosen variant, on items both answered."""
    from workhorse.tasks.evaluate.matrix import user_text

    baseline = answers.get(run.arms["incumbent"], {})
    requests = []
    for arm, key in run.arms.items():
        if arm == "incumbent":
            continue
        mine = answers.get(key, {})
        shared = [i for i in sorted(mine) if i in baseline and baseline[i].error_type is None]
        subjects = [
            Subject(
                i,
                user_text(by_item[i]),
                by_item[i].reference,
                {"incumbent": baseline[i].output, "candidate": mine[i].output},
            )
            for i in shared
            if mine[i].error_type is None
        ]
        requests += pairwise_requests(run.judge, run.spec, prompts, subjects, f"pairwise|{arm}")
    return requests


def _rubric(run: JudgeRun, prompts: JudgePrompts, by_item: dict, answers: dict) -> list[ModelRequest]:
    from workhorse.tasks.evaluate.matrix import user_text

    requests = []
    for arm, key in run.arms.items():
        subjects = [
            Subject(i, user_text(by_item[i]), by_item[i].reference, {"answer": row.output})
            for i, row in sorted(answers.get(key, {}).items())
            if row.error_type is None
        ]
        requests += rubric_requests(run.judge, run.spec, prompts, subjects, f"rubric|{arm}")
    return requests


def record_judgements(run: JudgeRun, rows: Sequence[EvalResponse], test_rows) -> JudgeRun:
    """Resolve the runner's rows into pair outcomes or grades (failed calls and unparseable
    judgements stay errors)."""
    run.rows = list(rows)
    said = {(r.prompt_variant, r.item_id): r for r in rows}
    answers = _answers_by_arm(test_rows)
    for arm, key in run.arms.items():
        run.failed_calls[arm] = {i for i, row in answers.get(key, {}).items() if row.error_type is not None}
    if run.judge.kind == "pairwise":
        baseline = answers.get(run.arms["incumbent"], {})
        for arm, key in run.arms.items():
            if arm != "incumbent":
                run.pairs[arm] = _pair_outcomes(arm, answers.get(key, {}), baseline, said)
    else:
        for arm, key in run.arms.items():
            run.grades += [
                grade_of(item_id, arm, said.get((f"rubric|{arm}", item_id)), run.judge.scale)
                for item_id, row in sorted(answers.get(key, {}).items())
                if row.error_type is None
            ]
    for subject, label in zip(human_subjects(run.human_labels), run.human_labels):
        judged = resolve_pair(
            subject.item_id, said.get(("human|AB", subject.item_id)), said.get(("human|BA", subject.item_id))
        )
        run.human.append((judged, human_preference(label)))
    return run


def _pair_outcomes(arm: str, mine: dict, baseline: dict, said: dict) -> list[PairOutcome]:
    """Every item the incumbent answered: the judged outcome, or a loss unjudged where the
    candidate's own call failed (a failure in production is one)."""
    outcomes = []
    for item_id, row in sorted(mine.items()):
        if item_id not in baseline or baseline[item_id].error_type is not None:
            continue
        if row.error_type is not None:
            outcomes.append(PairOutcome(item_id, "loss"))
            continue
        tag = f"pairwise|{arm}"
        outcomes.append(
            resolve_pair(item_id, said.get((f"{tag}|AB", item_id)), said.get((f"{tag}|BA", item_id)))
        )
    return outcomes


async def judge_test_answers(
    context, plan: Plan, use_case: str, items, incumbent, candidates, chosen, test_rows
):
    """Send the judge's requests through the one runner (the run's limits and breakers, the
    response cache, a checkpoint of its own); None when the use case has no judge."""
    from workhorse.tasks.evaluate.run import is_embedded, shard_runner

    case = plan.use_cases.get(use_case)
    if not case or not case.judge or not candidates:
        return None
    run, requests = judge_answers(
        plan, use_case, items, incumbent, candidates, chosen, test_rows, context.workspace.root
    )
    if requests and is_embedded(run.spec):
        import asyncio

        base = await asyncio.to_thread(context.server_base)
        requests = [replace(r, model=replace(r.model, api_base=base)) for r in requests]
    runner = shard_runner(
        context.workspace, context.run_id, requests, limits=context.limits, breakers=context.breakers
    )
    rows = await runner.run(requests) if requests else []
    return record_judgements(run, rows, test_rows)


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Calibration:
    """How far the judge can be trusted, and why not when it cannot."""

    source: str  # human_labels | references | none
    agreement: float | None  # share agreeing (pairwise) or Spearman correlation (rubric)
    n: int  # items the agreement is measured on
    position_inconsistency: float | None
    position_pairs: int
    judgements: int
    failed: int
    problems: tuple[str, ...] = ()

    @property
    def trusted(self) -> bool:
        return not self.problems


def calibrate(run: JudgeRun, test_scores: Sequence[dict], metric: str, max_error_rate: float) -> Calibration:
    """Agreement with human labels (when given) else with the reference, position consistency, and
    the judge's own failures, each against the plan's thresholds."""
    if run.judge.kind == "pairwise":
        source, agreement, n = _pairwise_agreement(run, test_scores)
    else:
        source, agreement, n = _rubric_agreement(run, test_scores, metric)
    paired = [o for o in _all_pairs(run) if o.consistent is not None]
    inconsistency = sum(not o.consistent for o in paired) / len(paired) if paired else None
    failed = sum(o.error_type is not None for o in _all_pairs(run)) + sum(
        g.error_type is not None for g in run.grades
    )
    attempted = len(paired) + len(run.grades) + failed - sum(g.error_type is not None for g in run.grades)
    calibration = Calibration(source, agreement, n, inconsistency, len(paired), attempted, failed)
    return replace(calibration, problems=_problems(run, calibration, max_error_rate))


def _problems(run: JudgeRun, c: Calibration, max_error_rate: float) -> tuple[str, ...]:
    """Why the judge is not trusted, one sentence per threshold it misses."""
    judge, problems = run.judge, []
    if c.agreement is None or c.n < judge.min_calibration_items:
        problems.append(
            f"it is uncalibrated: {c.n} item(s) where human labels or the reference decide, fewer than "
            f"the {judge.min_calibration_items} needed (judge.min_calibration_items)"
        )
    elif c.agreement < judge.min_agreement:
        what = "correlates with the reference metric at" if judge.kind == "rubric" else "agrees with"
        problems.append(
            f"it {what} {_source_words(c.source)} {c.agreement:.0%} on {c.n} items, below "
            f"judge.min_agreement {judge.min_agreement:.0%}"
        )
    if c.position_inconsistency is not None and c.position_inconsistency > judge.max_position_inconsistency:
        problems.append(
            f"its verdict flips with the answers' order on {c.position_inconsistency:.0%} of "
            f"{c.position_pairs} pairs, above judge.max_position_inconsistency "
            f"{judge.max_position_inconsistency:.0%}"
        )
    if c.judgements and c.failed / c.judgements > max_error_rate:
        problems.append(f"{c.failed} of its {c.judgements} judgements failed ({_failures(run)})")
    return tuple(problems)


def _all_pairs(run: JudgeRun) -> list[PairOutcome]:
    return [o for outcomes in run.pairs.values() for o in outcomes] + [o for o, _ in run.human]


def _failures(run: JudgeRun) -> str:
    errors = Counter(o.error_type for o in _all_pairs(run) if o.error_type)
    errors += Counter(g.error_type for g in run.grades if g.error_type)
    return ", ".join(f"{count} {kind}" for kind, count in errors.most_common())


def _source_words(source: str) -> str:
    return {"human_labels": "the human preference labels", "references": "the reference"}.get(source, source)


def _pairwise_agreement(run: JudgeRun, test_scores: Sequence[dict]) -> tuple[str, float | None, int]:
    """Human labels when the plan gives them; else the test pairs where exactly one answer is
    correct by the reference (the judge should prefer that one; a tie counts as disagreeing)."""
    if run.human_labels:
        judged = [(o.outcome, label) for o, label in run.human if o.outcome is not None]
        return "human_labels", (_share(a == b for a, b in judged) if judged else None), len(judged)
    correct = {(s["model"], s["prompt_variant"], s["item_id"]): bool(s["correct"]) for s in test_scores}
    incumbent = run.arms["incumbent"]
    agreeing = []
    for arm, outcomes in run.pairs.items():
        model, variant = run.arms[arm]
        for o in outcomes:
            if o.consistent is None:  # a failed call, not a judgement
                continue
            theirs = correct.get((*incumbent, o.item_id))
            mine = correct.get((model, variant, o.item_id))
            if theirs is None or mine is None or theirs == mine:
                continue
            agreeing.append(o.outcome == ("win" if mine else "loss"))
    return "references", (_share(agreeing) if agreeing else None), len(agreeing)


def _rubric_agreement(
    run: JudgeRun, test_scores: Sequence[dict], metric: str
) -> tuple[str, float | None, int]:
    """Spearman correlation of the judge's grades with the reference metric, over graded answers
    that have a reference."""
    from workhorse.tasks.evaluate.run import has_reference, metric_value

    scores = {(s["model"], s["prompt_variant"], s["item_id"]): s for s in test_scores}
    grades, values = [], []
    for grade in (g for g in run.grades if g.grade is not None):
        row = scores.get((*run.arms[grade.arm], grade.item_id))
        if row is not None and has_reference(row):
            grades.append(float(grade.grade))
            values.append(metric_value(row, metric))
    return "references", spearman(grades, values), len(grades)


def _share(flags) -> float:
    flags = list(flags)
    return sum(flags) / len(flags)


# --------------------------------------------------------------------------- verdict


def judge_metric(judge: JudgePlan) -> str:
    """The verdict's metric in words: it names the judge, so every reason does."""
    if judge.kind == "pairwise":
        return f"win rate over 50% (pairwise judge {judge.model}, ties half)"
    return f"rubric grade 0..1 (judge {judge.model}, 1..{judge.scale} rescaled)"


def judged_results(run: JudgeRun, reference_verdict) -> tuple[list[float], list] | None:
    """Paired per-item scores for the verdict, on the items every candidate's judgement covers:
    pairwise, the candidate's 1/½/0 against the incumbent's even ½; rubric, both grades rescaled."""
    results = []
    by_contender = {contender: arm for arm, contender in run.contenders.items()}
    per_arm = {arm: _judged_scores(run, arm) for arm in run.contenders}
    shared = set.intersection(*(set(scores) for scores in per_arm.values())) if per_arm else set()
    items = sorted(shared)
    for assessment in reference_verdict.assessments:
        c = assessment.candidate
        arm = by_contender.get((c.model, c.hosting))
        if arm is None:
            return None
        scores = [per_arm[arm][i][0] for i in items]
        results.append(replace(c, scores=scores, correct=None))
    baseline = [per_arm[by_contender[(r.model, r.hosting)]][i][1] for r in results[:1] for i in items]
    return baseline, results


def _judged_scores(run: JudgeRun, arm: str) -> dict[str, tuple[float, float]]:
    """item -> (candidate's score, incumbent's score) wherever both are known."""
    if run.judge.kind == "pairwise":
        return {o.item_id: (SCORE[o.outcome], 0.5) for o in run.pairs.get(arm, []) if o.outcome is not None}
    grades = {(g.arm, g.item_id): g for g in run.grades if g.grade is not None}
    scale = run.judge.scale
    scores = {}
    for (who, item_id), grade in grades.items():
        baseline = grades.get(("incumbent", item_id))
        if who == arm and baseline is not None:
            scores[item_id] = (grade.normalised(scale), baseline.normalised(scale))
    for item_id in run.failed_calls.get(arm, ()):  # a failed call in production is the worst answer
        baseline = grades.get(("incumbent", item_id))
        if baseline is not None:
            scores[item_id] = (0.0, baseline.normalised(scale))
    return scores


def judge_verdict(plan: Plan, use_case: str, run: JudgeRun | None, reference_verdict, test_scores):
    """(the verdict, the judge's figures for the summary): the judge's verdict when it can pair the
    arms, made ``inconclusive`` when its calibration fails; without a judge the reference's as it is."""
    from workhorse.tasks.evaluate.decision import verdict as decide_verdict

    if run is None:
        return reference_verdict, None
    policy = plan.quality_policy
    task_type = plan.use_cases[use_case].task_type
    calibration = calibrate(run, test_scores, policy.metric_for(task_type), policy.max_error_rate)
    paired = judged_results(run, reference_verdict)
    incumbent_problem = any(
        a.why in ("incumbent_not_evaluated", "incumbent_errors") for a in reference_verdict.assessments
    )
    if paired is None or incumbent_problem:
        final = reference_verdict
    else:
        baseline, results = paired
        metric = judge_metric(run.judge)
        judged_policy = policy.model_copy(
            update={"primary_metric": {**policy.primary_metric, task_type: metric}}
        )
        final = decide_verdict(use_case, baseline, results, judged_policy, task_type=task_type)
        if not calibration.trusted:
            final = distrusted(final, run.judge, calibration)
    figures = judge_summary(run, calibration, reference_verdict, plan)
    # The judge cannot pair arms the reference verdict could not (no incumbent answers): it reports only.
    return final, {**figures, "decided": final is not reference_verdict}


def distrusted(v, judge: JudgePlan, calibration: Calibration):
    """A judge that failed its calibration decides nothing: inconclusive, with its figures kept."""
    why = "; ".join(calibration.problems)
    reason = (
        f"{v.use_case}: inconclusive, judge {judge.model} ({judge.kind}) is not trusted: {why}. {v.reason}"
    )
    candidates = tuple(
        {
            **c,
            "decision": "inconclusive",
            "why": "judge_untrusted",
            "reason": f"{c['reason']} Not trusted: {why}.",
        }
        for c in v.candidates
    )
    return replace(v, decision="inconclusive", reason=reason, candidates=candidates, summary=reason)


def judge_summary(run: JudgeRun, calibration: Calibration, reference_verdict, plan: Plan) -> dict:
    """The judge's figures for verdict.json, the report and the artifacts: its own cost line."""
    policy = plan.quality_policy
    per_candidate = {}
    for arm in run.contenders:
        if run.judge.kind == "pairwise":
            per_candidate[arm] = pairwise_table(
                run.pairs.get(arm, []),
                confidence=policy.confidence,
                n_resamples=policy.n_resamples,
                seed=policy.seed,
            )
        else:
            per_candidate[arm] = _rubric_table(run, arm)
    if run.judge.kind == "rubric":
        per_candidate["incumbent"] = _rubric_table(run, "incumbent")
    return {
        "kind": run.judge.kind,
        "model": run.judge.model,
        "calls": sum(not r.cached for r in run.rows),
        "cached": sum(r.cached for r in run.rows),
        "cost_usd": run.cost_usd,
        "per_candidate": per_candidate,
        "calibration": {
            "source": calibration.source,
            "agreement": calibration.agreement,
            "n": calibration.n,
            "min_agreement": run.judge.min_agreement,
            "position_inconsistency": calibration.position_inconsistency,
            "position_pairs": calibration.position_pairs,
            "max_position_inconsistency": run.judge.max_position_inconsistency,
            "judgements": calibration.judgements,
            "failed": calibration.failed,
            "trusted": calibration.trusted,
            "problems": list(calibration.problems),
        },
        "reference_verdict": {"decision": reference_verdict.decision, "reason": reference_verdict.reason},
    }


def _rubric_table(run: JudgeRun, arm: str) -> dict:
    grades = [g for g in run.grades if g.arm == arm]
    known = [g.grade for g in grades if g.grade is not None]
    return {
        "n": len(known),
        "mean_grade": sum(known) / len(known) if known else None,
        "grades": dict(sorted(Counter(known).items())),
        "errors": dict(Counter(g.error_type for g in grades if g.error_type)),
    }


def judgement_rows(run: JudgeRun) -> list[dict]:
    """One row per resolved judgement (judgements.parquet): what a reviewer audits."""
    rows = [
        {
            "arm": arm,
            "item_id": o.item_id,
            "outcome": o.outcome,
            "grade": None,
            "consistent": o.consistent,
            "said_ab": o.orders[0],
            "said_ba": o.orders[1],
            "error_type": o.error_type,
        }
        for arm, outcomes in [*run.pairs.items(), ("human_labels", [o for o, _ in run.human])]
        for o in outcomes
    ]
    rows += [
        {
            "arm": g.arm,
            "item_id": g.item_id,
            "outcome": None,
            "grade": g.grade,
            "consistent": None,
            "said_ab": None,
            "said_ba": None,
            "error_type": g.error_type,
        }
        for g in run.grades
    ]
    return rows


def store_judgements(run: JudgeRun, folder: Path) -> None:
    """judge_responses.parquet (the judge's calls, eval_response schema) and judgements.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from workhorse.tasks.common.runner import responses_table

    pq.write_table(responses_table(run.rows), folder / "judge_responses.parquet")
    schema = pa.schema(
        [
            ("arm", pa.string()),
            ("item_id", pa.string()),
            ("outcome", pa.string()),
            ("grade", pa.int64()),
            ("consistent", pa.bool_()),
            ("said_ab", pa.string()),
            ("said_ba", pa.string()),
            ("error_type", pa.string()),
        ]
    )
    pq.write_table(pa.Table.from_pylist(judgement_rows(run), schema=schema), folder / "judgements.parquet")


# --------------------------------------------------------------------------- report


def judge_markdown(judge: dict | None) -> str:
    """The judge's section of the verdict artifact: cost, calibration, the win/tie/loss table."""
    if not judge:
        return ""
    c = judge["calibration"]
    cost = "unpriced" if judge["cost_usd"] is None else f"${judge['cost_usd']:.4f}"
    lines = [
        f"\n## Judge: {judge['model']} ({judge['kind']})\n",
        f"- cost: {cost} for {judge['calls']} calls ({judge['cached']} cached)",
        f"- calibration against {c['source']}: agreement {_pct(c['agreement'])} on {c['n']} items "
        f"(min {_pct(c['min_agreement'])}); position inconsistency {_pct(c['position_inconsistency'])} of "
        f"{c['position_pairs']} pairs (max {_pct(c['max_position_inconsistency'])})",
        f"- trusted: {'yes' if c['trusted'] else 'no — ' + '; '.join(c['problems'])}",
        f"- the reference metric's verdict: {judge['reference_verdict']['decision']}",
        "",
    ]
    if judge["kind"] == "pairwise":
        lines += [
            "| candidate | wins | ties | losses | win rate | CI | sign test p | inconsistent |",
            "|---" * 8 + "|",
        ]
        lines += [
            f"| {arm} | {t['wins']} | {t['ties']} | {t['losses']} | {_pct(t['win_rate'])} | "
            f"{_pct(t['ci_low'])} to {_pct(t['ci_high'])} | {t['sign_test_p']:.3g} | "
            f"{t['position_inconsistent']} |"
            for arm, t in judge["per_candidate"].items()
        ]
    else:
        lines += ["| arm | graded | mean grade | errors |", "|---" * 4 + "|"]
        lines += [
            f"| {arm} | {t['n']} | {_number(t['mean_grade'])} | {sum(t['errors'].values())} |"
            for arm, t in judge["per_candidate"].items()
        ]
    return "\n".join(lines) + "\n"


def judge_line(judge: dict) -> str:
    """The judge in one line for a terminal: its table, calibration, cost and whether it is trusted."""
    c = judge["calibration"]
    cost = "unpriced" if judge["cost_usd"] is None else f"${judge['cost_usd']:.4f}"
    tables = "; ".join(
        f"{arm} {t['wins']}/{t['ties']}/{t['losses']} win/tie/loss, win rate {_pct(t['win_rate'])} "
        f"(CI {_pct(t['ci_low'])} to {_pct(t['ci_high'])})"
        if judge["kind"] == "pairwise"
        else f"{arm} mean grade {_number(t['mean_grade'])} on {t['n']}"
        for arm, t in judge["per_candidate"].items()
    )
    trust = "trusted" if c["trusted"] else "not trusted"
    return (
        f"judge {judge['model']} ({judge['kind']}): {tables}; agreement with {c['source']} "
        f"{_pct(c['agreement'])} on {c['n']}, position inconsistency {_pct(c['position_inconsistency'])}; "
        f"{judge['calls']} calls, {cost}; {trust}"
    )


def judge_html(judge: dict | None) -> str:
    """The same section for report.html."""
    import html

    if not judge:
        return ""
    return f"<h2>Judge</h2><pre>{html.escape(judge_markdown(judge))}</pre>"


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def _number(value) -> str:
    return "-" if value is None else f"{value:.2f}"
