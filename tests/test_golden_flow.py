"""The golden_dataset_refresh flow and the `workhorse golden` commands, on a real Prefect server."""

from __future__ import annotations

import json

import pytest

from tests.support.golden_kit import write_plan
from workhorse.errors import ContractError
from workhorse.tasks.golden.refresh import load_golden, read_manifest
from workhorse.tasks.golden.versions import versions


def flow_artifacts(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {artifact.key: artifact for artifact in found}


def test_flow_refreshes_every_use_case_and_publishes_artifacts(
    prefect_server, golden_plan, tmp_path, isolated_workspace
):
    from workhorse.flows.golden import golden_dataset_refresh

    state = golden_dataset_refresh(
        plan=str(write_plan(golden_plan, tmp_path)), workspace=str(isolated_workspace.root), return_state=True
    )
    rows = {row["use_case"]: row for row in state.result()}
    assert set(rows) == {"ticket-routing", "booking-slots"}
    for name, row in rows.items():
        stored = load_golden(isolated_workspace, name)
        assert row["items"] == len(stored) == read_manifest(isolated_workspace, name)["counts"]["items"]
        assert row["dev"] + row["test"] == len(stored) and row["new_version"]
    routing = load_golden(isolated_workspace, "ticket-routing")
    assert {item.source for item in routing} == {"labels:routing.csv", "openai_evals:evals.jsonl"}
    artifacts = flow_artifacts(state.state_details.flow_run_id)
    assert set(artifacts) == {"golden-refresh", "golden-counts"}
    assert "## ticket-routing: new version v1" in artifacts["golden-refresh"].data
    assert (
        f"`{read_manifest(isolated_workspace, 'booking-slots')['content_hash']}`"
        in artifacts["golden-refresh"].data
    )
    assert {row["use_case"] for row in json.loads(artifacts["golden-counts"].data)} == set(rows)
    assert {"dedup_kept", "exact", "near", "conflicts_resolved", "conflicts_kept", "warnings"} <= set(
        rows["booking-slots"]
    )
    assert rows["ticket-routing"]["dedup_kept"] == 86 and rows["ticket-routing"]["warnings"] == []
    assert "- dedup: 86 kept; removed 0 exact, 0 near" in artifacts["golden-refresh"].data


def test_a_broken_use_case_fails_the_flow_but_not_the_others(
    prefect_server, golden_plan, tmp_path, isolated_workspace
):
    from workhorse.flows.golden import golden_dataset_refresh

    (tmp_path / "tiny.csv").write_text("text,category\nWhere is my card?,card_arrival\n")
    golden_plan["use_cases"]["tiny"] = {
        "task_type": "classification",
        "labels": ["card_arrival", "card_linking"],
        "golden": {
            "sources": [
                {"kind": "labels", "path": "tiny.csv", "mapping": {"input": "text", "reference": "category"}}
            ]
        },
    }
    with pytest.raises(ContractError, match="tiny"):
        golden_dataset_refresh(
            plan=str(write_plan(golden_plan, tmp_path)), workspace=str(isolated_workspace.root)
        )
    assert versions(isolated_workspace, "tiny") == []
    assert versions(isolated_workspace, "ticket-routing") == [1] and versions(
        isolated_workspace, "booking-slots"
    ) == [1]


def test_cli_refresh_then_show(prefect_server, golden_plan, tmp_path, isolated_workspace):
    from typer.testing import CliRunner

    from workhorse.cli import app

    path = write_plan(golden_plan, tmp_path)
    runner = CliRunner()
    workspace = str(isolated_workspace.root)
    first = runner.invoke(
        app, ["golden", "refresh", "--plan", str(path), "-u", "booking-slots", "-w", workspace]
    )
    assert first.exit_code == 0, first.output
    assert "v1 (new)" in first.output and versions(isolated_workspace, "ticket-routing") == []
    again = runner.invoke(
        app, ["golden", "refresh", "--plan", str(path), "-u", "booking-slots", "-w", workspace]
    )
    assert (
        again.exit_code == 0
        and "v1 (new)" not in again.output
        and versions(isolated_workspace, "booking-slots") == [1]
    )
    shown = runner.invoke(app, ["golden", "show", "booking-slots", "-w", workspace])
    assert shown.exit_code == 0, shown.output
    assert read_manifest(isolated_workspace, "booking-slots")["content_hash"][:16] in shown.output


def test_cli_import_promptfoo(tmp_path, isolated_workspace):
    from typer.testing import CliRunner

    from workhorse.cli import app

    csv_path = tmp_path / "tests.csv"
    csv_path.write_text(
        "question,__expected\n" + "".join(f"What is {n} + {n}?,equals: {2 * n}\n" for n in range(12))
    )
    result = CliRunner().invoke(
        app,
        [
            "golden",
            "import",
            str(csv_path),
            "-u",
            "math",
            "-t",
            "qa",
            "-f",
            "promptfoo",
            "--input",
            "question",
            "-w",
            str(isolated_workspace.root),
        ],
    )
    assert result.exit_code == 0, result.output
    items = load_golden(isolated_workspace, "math")
    assert sorted(item.reference for item in items) == sorted(str(2 * n) for n in range(12))
    assert {item.source for item in items} == {"promptfoo:tests.csv"}


@pytest.mark.parametrize(
    "copies,counts,warning",
    [
        (
            False,
            "kept 50, exact 0, near 0, conflicting 0 (0 resolved by label origin, 0 kept for review)",
            None,
        ),
        (
            True,
            "kept 52, exact 4, near 10, conflicting 3 (1 resolved by label origin, 2 kept for review)",
            "warning: report-qa: dedup removed 15 of 67 rows (22%, more than golden.max_duplicate_share 20%)",
        ),
    ],
)
def test_cli_prints_dedup_counts_separately_and_warns_above_the_share(
    tmp_path, isolated_workspace, copies, counts, warning
):
    """50 questions over 5 shared contexts: the old CLI said 'dupes 45' and stored 5 of them."""
    from typer.testing import CliRunner

    from tests.support.golden_kit import shared_context_items, with_duplicates
    from workhorse.cli import app

    items = with_duplicates(shared_context_items()) if copies else shared_context_items()
    path = tmp_path / "qa.jsonl"
    path.write_text(
        "".join(json.dumps({"input": item.input, "reference": item.reference}) + "\n" for item in items)
    )
    workspace = str(isolated_workspace.root)
    result = CliRunner().invoke(
        app, ["golden", "import", str(path), "-u", "report-qa", "-t", "qa", "-w", workspace]
    )
    assert result.exit_code == 0, result.output
    assert f"report-qa dedup: {counts}" in result.output
    assert (warning in result.output) if warning else "warning" not in result.output
    shown = CliRunner().invoke(app, ["golden", "show", "report-qa", "-w", workspace])
    assert f"dedup: {counts}" in shown.output and (
        warning is None or warning.split("report-qa: ")[1] in shown.output
    )


def test_cli_reports_a_refused_set_without_a_traceback(tmp_path, isolated_workspace):
    from typer.testing import CliRunner

    from workhorse.cli import app

    path = tmp_path / "one.csv"
    path.write_text("text,category\nWhere is my card?,card_arrival\n")
    result = CliRunner().invoke(
        app,
        [
            "golden",
            "import",
            str(path),
            "-u",
            "tiny",
            "-t",
            "classification",
            "--input",
            "text",
            "--reference",
            "category",
            "--labels",
            "card_arrival,other",
            "-w",
            str(isolated_workspace.root),
        ],
    )
    assert (
        result.exit_code == 1
        and "golden set not refreshed" in result.output
        and "no accepted item" in result.output
    )
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
