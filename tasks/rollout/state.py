"""The rollout state machine of one use case: which arm gets how much traffic, and why.

    idle → shadow → 5 → 10 → 25 → 50 → promoted (100 %)
    any active step → paused (weights kept, never promotes by itself) → resume
    any step, paused or promoted → reverted (incumbent 100 %)

State and weights are ONE row of ``rollout_state`` in the state store (``state.db`` or
PostgreSQL, see ``workhorse.store``); every transition updates that row (compare-and-set on its
``version``) and appends to ``rollout_history`` in the same transaction, which holds the use
case's write lock (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL). A process
killed at any point therefore leaves either the old row or the new one, each with its weights:
the traffic arm is always known, and a CHECK keeps the candidate between 0 and 100 % (the
incumbent gets the rest, so never both at 100).

``revert`` is idempotent: re-running it changes nothing and does not alert twice. Its Slack
alert (a callable hook) and Prefect event (``workhorse.rollout.reverted``) are sent after the
commit; a process killed in between leaves the alert pending and the next ``revert`` sends it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

from pydantic import BaseModel

from workhorse import store
from workhorse.config import RolloutPolicy
from workhorse.errors import RolloutError
from workhorse.tasks.common.traffic_log import now_micros
from workhorse.workspace import Workspace

log = logging.getLogger(__name__)

ACTIVE = "active"  # a state whose stage is a step of the policy
TERMINAL = ("idle", "promoted", "reverted")
REVERTED_EVENT = "workhorse.rollout.reverted"
# A pending alert older than this is taken to belong to a killed process and is sent again.
ALERT_LEASE_S = 30.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS rollout_state (
    use_case TEXT PRIMARY KEY,
    stage TEXT NOT NULL,
    step_index INTEGER NOT NULL,
    candidate_weight INTEGER NOT NULL CHECK (candidate_weight BETWEEN 0 AND 100),
    shadow INTEGER NOT NULL CHECK (shadow IN (0, 1)),
    incumbent TEXT, candidate TEXT, policy TEXT NOT NULL,
    step_started_at INTEGER NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0, consecutive_errors INTEGER NOT NULL DEFAULT 0,
    inconclusive INTEGER NOT NULL DEFAULT 0,
    reason TEXT, evidence TEXT,
    alert_pending INTEGER NOT NULL DEFAULT 0, alert_claimed_at INTEGER,
    version INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    CHECK (stage NOT IN ('idle', 'reverted') OR (candidate_weight = 0 AND shadow = 0)),
    CHECK (stage != 'promoted' OR (candidate_weight = 100 AND shadow = 0))
);
CREATE TABLE IF NOT EXISTS rollout_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    use_case TEXT NOT NULL, version INTEGER NOT NULL, action TEXT NOT NULL,
    from_stage TEXT NOT NULL, to_stage TEXT NOT NULL,
    candidate_weight INTEGER NOT NULL, shadow INTEGER NOT NULL,
    reason TEXT, evidence TEXT, ts INTEGER NOT NULL,
    UNIQUE (use_case, version)
);
"""


@dataclass(frozen=True)
class RolloutState:
    """One use case's rollout: the stage, its weights, the counters and the last reason."""

    use_case: str
    stage: str = "idle"
    step_index: int = -1
    candidate_weight: int = 0
    shadow: bool = False
    incumbent: str | None = None
    candidate: str | None = None
    policy: dict = field(default_factory=dict)
    step_started_at: int = 0
    failures: int = 0
    consecutive_errors: int = 0
    inconclusive: int = 0
    reason: str | None = None
    evidence: dict = field(default_factory=dict)
    alert_pending: bool = False
    alert_claimed_at: int | None = None
    version: int = 0
    updated_at: int = 0

    @property
    def rollout_policy(self) -> RolloutPolicy:
        """The policy stored when the rollout started. One stored by an older version may hold keys
        the plan model has since refused (it once accepted any key): they are dropped with a
        warning, so a rollout begun before an upgrade can still advance or revert."""
        return RolloutPolicy.model_validate(_known_keys(RolloutPolicy, self.policy, self.use_case))

    @property
    def is_active(self) -> bool:
        """On a step of the policy (shadow or a percentage below 100), analysed by the loop."""
        return self.stage not in TERMINAL and self.stage != "paused"

    @property
    def weights(self) -> dict:
        return {
            "incumbent": 100 - self.candidate_weight,
            "candidate": self.candidate_weight,
            "shadow": self.shadow,
            "stage": self.stage,
            "version": self.version,
        }


@dataclass(frozen=True)
class Transition:
    """What one call did: ``changed`` is False for an idempotent repeat or a stale analysis."""

    use_case: str
    action: str
    from_stage: str
    to_stage: str
    version: int
    weights: dict
    reason: str | None = None
    evidence: dict = field(default_factory=dict)
    changed: bool = True

    def as_dict(self) -> dict:
        return asdict(self)


# --- reading -------------------------------------------------------------------------------


def _known_keys(model: type[BaseModel], data: dict, where: str) -> dict:
    """``data`` without the keys ``model`` does not declare, nested sections included."""
    known = {}
    for key, value in data.items():
        field_info = model.model_fields.get(key)
        if field_info is None:
            log.warning("%s: stored rollout policy key %r is no longer known; ignored", where, key)
            continue
        nested = field_info.annotation
        is_section = isinstance(nested, type) and issubclass(nested, BaseModel) and isinstance(value, dict)
        known[key] = _known_keys(nested, value, f"{where}.{key}") if is_section else value
    return known


def _connect(workspace: Workspace):
    connection = store.connect(workspace)
    connection.ensure(SCHEMA)
    return connection


def _read(connection, use_case: str) -> RolloutState:
    cursor = connection.execute("SELECT * FROM rollout_state WHERE use_case = ?", (use_case,))
    row = cursor.fetchone()
    if row is None:
        return RolloutState(use_case)
    values = dict(zip([d[0] for d in cursor.description], row))
    values.update(
        shadow=bool(values["shadow"]),
        alert_pending=bool(values["alert_pending"]),
        policy=json.loads(values["policy"]),
        evidence=json.loads(values["evidence"] or "{}"),
    )
    return RolloutState(**values)


def current_state(workspace: Workspace | str | None, use_case: str) -> RolloutState:
    """The stored state (``idle`` with the incumbent at 100 % when no rollout ever started)."""
    with _connect(_ws(workspace)) as connection:
        return _read(connection, use_case)


def current_weights(workspace: Workspace | str | None, use_case: str) -> dict:
    """``{incumbent: pct, candidate: pct, shadow: bool, stage, version}`` from the one state row."""
    return current_state(workspace, use_case).weights


def history(workspace: Workspace | str | None, use_case: str) -> list[dict]:
    """Every recorded transition of a use case, oldest first."""
    with _connect(_ws(workspace)) as connection:
        cursor = connection.execute(
            "SELECT * FROM rollout_history WHERE use_case = ? ORDER BY version", (use_case,)
        )
        return [
            row | {"evidence": json.loads(row["evidence"] or "{}")} for row in store.rows_as_dicts(cursor)
        ]


def _ws(workspace: Workspace | str | None) -> Workspace:
    return workspace if isinstance(workspace, Workspace) else Workspace.resolve(workspace)


# --- the one way to change state -----------------------------------------------------------


def _transact(
    workspace: Workspace, use_case: str, action: str, decide: Callable[[RolloutState], RolloutState | None]
) -> Transition:
    """Read, decide and write state + history in ONE immediate transaction (compare-and-set)."""
    with _connect(workspace) as connection, connection.transaction(lock=f"rollout:{use_case}"):
        old = _read(connection, use_case)
        new = decide(old)
        if new is None:  # nothing written: the transaction ends empty
            return _transition(old, old, action, changed=False)
        new = replace(new, version=old.version + 1, updated_at=now_micros())
        _write(connection, old, new)
        _append_history(connection, old, new, action)
        return _transition(old, new, action)


def _write(connection, old: RolloutState, new: RolloutState) -> None:
    values = asdict(new)
    values.update(
        policy=json.dumps(new.policy),
        evidence=json.dumps(new.evidence, default=str),
        shadow=int(new.shadow),
        alert_pending=int(new.alert_pending),
    )
    names = list(values)
    if old.version == 0:
        sql = f"INSERT INTO rollout_state ({','.join(names)}) VALUES ({','.join('?' * len(names))})"
        connection.execute(sql, [values[n] for n in names])
        return
    assignments = ",".join(f"{n} = ?" for n in names if n != "use_case")
    cursor = connection.execute(
        f"UPDATE rollout_state SET {assignments} WHERE use_case = ? AND version = ?",
        [values[n] for n in names if n != "use_case"] + [new.use_case, old.version],
    )
    if cursor.rowcount != 1:  # cannot happen under the use case's write lock; the invariant's guard
        raise RolloutError(f"{new.use_case}: rollout state changed under this transition")


def _append_history(connection, old: RolloutState, new: RolloutState, action: str) -> None:
    connection.execute(
        "INSERT INTO rollout_history (use_case, version, action, from_stage, to_stage, candidate_weight, "
        "shadow, reason, evidence, ts) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            new.use_case,
            new.version,
            action,
            old.stage,
            new.stage,
            new.candidate_weight,
            int(new.shadow),
            new.reason,
            json.dumps(new.evidence, default=str),
            new.updated_at,
        ),
    )


def _transition(old: RolloutState, new: RolloutState, action: str, changed: bool = True) -> Transition:
    return Transition(
        new.use_case,
        action,
        old.stage,
        new.stage,
        new.version,
        new.weights,
        new.reason,
        new.evidence,
        changed,
    )


# --- steps ---------------------------------------------------------------------------------


def step_stage(policy: RolloutPolicy, index: int) -> tuple[str, int, bool]:
    """(stage name, candidate weight, shadow) of step ``index``; the last step is ``promoted``."""
    value = policy.steps[index]
    if value == "shadow":
        return "shadow", 0, True
    return ("promoted" if value == 100 else str(value)), int(value), False


def _at_step(state: RolloutState, index: int, reason: str, evidence: dict | None = None) -> RolloutState:
    stage, weight, shadow = step_stage(state.rollout_policy, index)
    return replace(
        state,
        stage=stage,
        step_index=index,
        candidate_weight=weight,
        shadow=shadow,
        step_started_at=now_micros(),
        inconclusive=0,
        reason=reason,
        evidence=evidence or {},
    )


def _label(model: Any) -> str:
    return getattr(model, "label", None) or getattr(model, "model", None) or str(model)


# --- public transitions --------------------------------------------------------------------


def start_rollout(
    workspace: Workspace | str | None,
    use_case: str,
    incumbent: Any,
    candidate: Any,
    policy: RolloutPolicy | dict | None = None,
) -> Transition:
    """Begin at the policy's first step. Repeating it for the same models is a no-op."""
    policy = policy if isinstance(policy, RolloutPolicy) else RolloutPolicy.model_validate(policy or {})
    incumbent, candidate = _label(incumbent), _label(candidate)

    def decide(state: RolloutState) -> RolloutState | None:
        if state.stage not in TERMINAL:
            if (state.incumbent, state.candidate) == (incumbent, candidate):
                return None
            raise RolloutError(
                f"{use_case}: a rollout of {state.candidate} is in progress ({state.stage}); "
                f"abort it before starting {candidate}"
            )
        fresh = replace(
            state,
            incumbent=incumbent,
            candidate=candidate,
            policy=policy.model_dump(),
            failures=0,
            consecutive_errors=0,
            alert_pending=False,
            alert_claimed_at=None,
        )
        return _at_step(fresh, 0, f"rollout of {candidate} (incumbent {incumbent}) started")

    return _transact(_ws(workspace), use_case, "start", decide)


def advance(
    workspace: Workspace | str | None,
    use_case: str,
    analysis: Any = None,
    *,
    manual: bool = False,
    expected_version: int | None = None,
    notify: Callable[[dict], None] | None = None,
) -> Transition:
    """Apply one analysis of the current step, or with ``manual=True`` move one step on by hand.

    No analysis and no ``manual`` changes nothing: a loop with nothing to judge never advances.

    The analysis carries the ``version`` it was computed on: a state that moved meanwhile makes
    it stale and nothing changes (of concurrent callers, one wins). Outcomes: ``pass`` → next
    step; ``fail`` → counters, revert past the limits; ``critical`` → revert; ``inconclusive`` →
    counter, pause past the limit; ``wait`` → nothing (bake time not over).
    """
    expected = getattr(analysis, "version", None) if analysis is not None else expected_version
    outcome = (
        getattr(analysis, "outcome", "pass") if analysis is not None else ("manual" if manual else "none")
    )
    reason = getattr(analysis, "reason", None) or "advanced by operator"
    evidence = _evidence_of(analysis)

    def decide(state: RolloutState) -> RolloutState | None:
        if outcome == "none" or (expected is not None and expected != state.version):
            return None
        if outcome == "manual" and state.stage == "paused":
            state = replace(state, stage="resuming")
        if not state.is_active and state.stage != "resuming":
            return None
        return _apply(state, outcome, reason, evidence)

    transition = _transact(
        _ws(workspace), use_case, f"analysis:{outcome}" if analysis is not None else "advance", decide
    )
    _announce_if_reverted(_ws(workspace), transition, notify)
    return transition


def _apply(state: RolloutState, outcome: str, reason: str, evidence: dict) -> RolloutState | None:
    policy = state.rollout_policy
    if outcome in ("pass", "manual"):
        nxt = min(state.step_index + 1, len(policy.steps) - 1)
        return _at_step(replace(state, consecutive_errors=0), nxt, reason, evidence)
    if outcome == "critical":
        return _reverted(state, f"critical: {reason}", evidence)
    if outcome == "fail":
        failed = replace(
            state,
            failures=state.failures + 1,
            consecutive_errors=state.consecutive_errors + 1,
            reason=reason,
            evidence=evidence,
        )
        if (
            failed.failures > policy.failure_limit
            or failed.consecutive_errors > policy.consecutive_error_limit
        ):
            return _reverted(
                failed,
                f"{failed.failures} failed analyses ({failed.consecutive_errors} in a row): {reason}",
                evidence,
            )
        return failed
    if outcome == "inconclusive":
        unsure = replace(state, inconclusive=state.inconclusive + 1, reason=reason, evidence=evidence)
        if unsure.inconclusive > policy.inconclusive_limit:
            return replace(
                unsure,
                stage="paused",
                reason=f"paused after {unsure.inconclusive} inconclusive analyses: {reason}",
            )
        return unsure
    return None  # wait: the step keeps baking


def _reverted(state: RolloutState, reason: str, evidence: dict) -> RolloutState:
    return replace(
        state,
        stage="reverted",
        candidate_weight=0,
        shadow=False,
        reason=reason,
        evidence=evidence,
        alert_pending=True,
        alert_claimed_at=now_micros(),
    )


def _evidence_of(analysis: Any) -> dict:
    if analysis is None:
        return {}
    evidence = getattr(analysis, "evidence", None)
    evidence = evidence() if callable(evidence) else evidence
    return json.loads(json.dumps(evidence or {}, default=str))


def promote(
    workspace: Workspace | str | None, use_case: str, reason: str = "promoted by operator"
) -> Transition:
    """Skip the remaining steps: the candidate takes 100 % (from any active or paused step)."""

    def decide(state: RolloutState) -> RolloutState | None:
        if not (state.is_active or state.stage == "paused"):
            return None
        return _at_step(state, len(state.rollout_policy.steps) - 1, reason)

    return _transact(_ws(workspace), use_case, "promote", decide)


def pause(workspace: Workspace | str | None, use_case: str, reason: str = "paused by operator") -> Transition:
    """Hold the current weights; the control loop leaves a paused rollout alone."""

    def decide(state: RolloutState) -> RolloutState | None:
        return replace(state, stage="paused", reason=reason) if state.is_active else None

    return _transact(_ws(workspace), use_case, "pause", decide)


def resume(
    workspace: Workspace | str | None, use_case: str, reason: str = "resumed by operator"
) -> Transition:
    """Restart the paused step (its bake time and inconclusive counter begin again)."""

    def decide(state: RolloutState) -> RolloutState | None:
        return _at_step(state, state.step_index, reason) if state.stage == "paused" else None

    return _transact(_ws(workspace), use_case, "resume", decide)


def abort(
    workspace: Workspace | str | None,
    use_case: str,
    reason: str = "aborted by operator",
    notify: Callable[[dict], None] | None = None,
) -> Transition:
    """An operator's revert: same effect and alert as an automatic one."""
    return revert(workspace, use_case, reason, {}, notify=notify, action="abort")


def revert(
    workspace: Workspace | str | None,
    use_case: str,
    reason: str,
    evidence: dict | None = None,
    *,
    notify: Callable[[dict], None] | None = None,
    action: str = "revert",
) -> Transition:
    """Incumbent to 100 %, state ``reverted`` with the reason and evidence; one alert, one event.

    Idempotent: on a reverted (or never started) use case it changes nothing and alerts nobody,
    except an alert left pending by a killed process, which is sent now.
    """
    evidence = json.loads(json.dumps(evidence or {}, default=str))

    def decide(state: RolloutState) -> RolloutState | None:
        return None if state.stage in ("idle", "reverted") else _reverted(state, reason, evidence)

    ws = _ws(workspace)
    transition = _transact(ws, use_case, action, decide)
    _announce_if_reverted(ws, transition, notify)
    return transition


# --- the alert and the event ---------------------------------------------------------------

_notifiers: list[Callable[[dict], None]] = []


def add_revert_notifier(notifier: Callable[[dict], None]) -> None:
    """Register a callable (e.g. a Slack sender) that hears about every revert, once."""
    if notifier not in _notifiers:
        _notifiers.append(notifier)


def remove_revert_notifier(notifier: Callable[[dict], None]) -> None:
    if notifier in _notifiers:
        _notifiers.remove(notifier)


def _announce_if_reverted(
    workspace: Workspace, transition: Transition, notify: Callable[[dict], None] | None
) -> None:
    if transition.to_stage != "reverted":
        return
    if not transition.changed and not _claim_stale_alert(workspace, transition.use_case):
        return
    state = current_state(workspace, transition.use_case)
    payload = revert_payload(state)
    for hook in [notify] if notify else list(_notifiers):
        try:
            hook(payload)
        except Exception:  # an alert channel down must not undo or block the revert
            log.exception("%s: revert notifier failed", state.use_case)
    if not notify and not _notifiers:
        log.warning("%s reverted (%s); no notifier is registered", state.use_case, state.reason)
    emit_reverted_event(payload)
    _mark_alert_sent(workspace, state)


def _claim_stale_alert(workspace: Workspace, use_case: str) -> bool:
    """Take over an alert a killed process left pending (compare-and-set on its claim time)."""
    with _connect(workspace) as connection:
        now = now_micros()
        cursor = connection.execute(
            "UPDATE rollout_state SET alert_claimed_at = ? WHERE use_case = ? AND stage = 'reverted' "
            "AND alert_pending = 1 AND (alert_claimed_at IS NULL OR alert_claimed_at <= ?)",
            (now, use_case, now - int(ALERT_LEASE_S * 1_000_000)),
        )
        return cursor.rowcount == 1


def _mark_alert_sent(workspace: Workspace, state: RolloutState) -> None:
    with _connect(workspace) as connection:
        connection.execute(
            "UPDATE rollout_state SET alert_pending = 0 WHERE use_case = ? AND version = ?",
            (state.use_case, state.version),
        )


def revert_payload(state: RolloutState) -> dict:
    """What the alert and the event say: which use case, from what, why, with which numbers."""
    return {
        "use_case": state.use_case,
        "incumbent": state.incumbent,
        "candidate": state.candidate,
        "stage": state.stage,
        "reason": state.reason,
        "evidence": state.evidence,
        "version": state.version,
        "weights": state.weights,
    }


def emit_reverted_event(payload: dict) -> Any:
    """A Prefect event so Automations can act; without a Prefect API it is only logged."""
    try:
        from prefect.context import FlowRunContext
        from prefect.events import emit_event
        from prefect.settings import PREFECT_API_URL

        # Without a server Prefect would start a temporary one (~15 s): a revert must not wait for that.
        if not PREFECT_API_URL.value() and FlowRunContext.get() is None:
            log.info("%s: no Prefect API configured; %s not emitted", payload["use_case"], REVERTED_EVENT)
            return None

        return emit_event(
            event=REVERTED_EVENT,
            payload=payload,
            resource={
                "prefect.resource.id": f"workhorse.rollout.{payload['use_case']}",
                "prefect.resource.name": payload["use_case"],
            },
        )
    except Exception:  # the revert already happened; a missing event stream must not raise
        log.exception("%s: could not emit %s", payload["use_case"], REVERTED_EVENT)
        return None
