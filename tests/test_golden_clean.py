"""Dedup (exact, near with MinHash LSH, questions over shared contexts, reference conflicts) and
the input sanity checks of the golden contract."""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import replace

import pytest

from tests.support.golden_kit import QA, edited, shared_context_items, shout, typo, with_duplicates
from workhorse.tasks.golden.clean import (
    Sanity,
    candidate_pairs,
    deduplicate,
    jaccard,
    shingles,
    validate_items,
)
from workhorse.tasks.golden.item import items_to_table, user_messages
from workhorse.tasks.golden.sources import GoldenSpec

SPEC = GoldenSpec("routing", "classification", labels=["card_arrival", "lost_or_stolen_card", "other"])


def item(text, reference="card_arrival", origin="incumbent", spec=SPEC):
    return spec.item(user_messages(text), reference, source="test", label_origin=origin)


def test_exact_duplicates_ignore_case_punctuation_and_spacing_and_keep_the_best_reference():
    items = [
        item("Where is my card?"),
        item("where is   my CARD", "lost_or_stolen_card", origin="human"),
        item("Where is my card!!", "other", origin="import"),
        item("I lost my card", "lost_or_stolen_card"),
        item("I LOST my card.", "lost_or_stolen_card"),
    ]
    kept, report = deduplicate(items)
    assert [(i.text, i.label_origin) for i in kept] == [
        ("where is   my CARD", "human"),
        ("I lost my card", "incumbent"),
    ]
    # The same input cannot stay twice: the human label wins, the two that disagree are resolved conflicts.
    assert (report.kept, report.exact, report.near, report.conflicts_resolved, report.conflicts_kept) == (
        2,
        1,
        0,
        2,
        0,
    )
    assert {tuple(e["references"]) for e in report.examples if e["kind"] == "conflicts_resolved"} == {
        ("lost_or_stolen_card", "card_arrival"),
        ("lost_or_stolen_card", "other"),
    }


ORDER = "I ordered a new card over a week ago and it still has not arrived at my address"


@pytest.mark.parametrize(
    "left,right,threshold,duplicate",
    [
        (ORDER, ORDER.replace("address", "adress"), 0.9, True),
        (ORDER, ORDER + " please", 0.9, True),
        (ORDER, ORDER + ", please help", 0.9, False),  # 13 new characters of 90: Jaccard 0.85
        (ORDER, ORDER + ", please help", 0.8, True),
        (
            "Can I top up my account with a bank transfer from another country?",
            "Can I top up my account with a card payment from another country?",
            0.9,
            False,
        ),
        ("What is 10 + 10?", "What is 11 + 11?", 0.9, False),
    ],
)
def test_near_duplicates(left, right, threshold, duplicate):
    assert (jaccard(shingles(left), shingles(right)) >= threshold) is duplicate
    kept, report = deduplicate([item(left), item(right)], threshold)
    assert (len(kept), report.near) == ((1, 1) if duplicate else (2, 0))
    assert kept[0].text == left


def test_lsh_finds_every_pair_above_the_threshold(shared_datasets):
    """The banded MinHash index against brute force on 400 real questions plus edited copies."""
    with open(shared_datasets / "banking77" / "test.csv", encoding="utf-8") as handle:
        texts = [row["text"] for row in itertools.islice(csv.DictReader(handle), 400)]
    texts += [text.replace(" my ", " mine ") + " thanks" for text in texts[:60]]
    sets = [shingles(text) for text in texts]
    truth = {
        (a, b) for a, b in itertools.combinations(range(len(sets)), 2) if jaccard(sets[a], sets[b]) >= 0.9
    }
    found = candidate_pairs(sets)
    assert truth and truth <= found
    assert len(found) < len(sets) * 10  # candidates stay near-linear, not all pairs


# ---------------------------------------------------------------- questions over shared contexts


def test_the_shared_context_set_is_what_the_old_dedup_collapsed():
    items = shared_context_items()
    contexts = [
        item.text.split("Question:")[0] if n < 30 else item.input[0]["content"]
        for n, item in enumerate(items)
    ]
    assert min(map(len, contexts)) > 1_500 and len({item.reference for item in items}) == 50
    sets = [shingles(item.text) for item in items]
    assert (
        min(jaccard(sets[a], sets[b]) for a, b in itertools.combinations(range(50), 2) if a // 10 == b // 10)
        > 0.94
    )


@pytest.mark.parametrize("same_reference", [False, True], ids=["distinct-references", "every-reference-yes"])
def test_different_questions_about_one_context_are_all_kept(same_reference):
    items = shared_context_items()
    if same_reference:  # the questions alone must tell them apart, not only their answers
        items = [replace(item, reference="yes") for item in items]
    kept, report = deduplicate(items)
    assert kept == items
    assert (report.kept, report.exact, report.near, report.conflicts_resolved, report.conflicts_kept) == (
        50,
        0,
        0,
        0,
        0,
    )
    assert report.removed_share == 0 and report.examples == []


NEAR_EDITS = [
    # (edit of the last message, index of the item edited, the count that removes the copy)
    pytest.param(shout, 3, "exact", id="case-and-spacing"),
    pytest.param(lambda t: t.replace("?", " ??"), 45, "exact", id="punctuation"),
    pytest.param(typo, 3, "near", id="typo-in-question-beside-a-table"),
    pytest.param(typo, 45, "near", id="typo-in-question-under-a-system-transcript"),
    pytest.param(lambda t: t.replace("Gross profit", "Gross proft", 1), 7, "near", id="typo-in-the-table"),
    pytest.param(lambda t: t + " Thanks!", 12, "near", id="a-sentence-that-asks-nothing"),
]


@pytest.mark.parametrize("edit,index,kind", NEAR_EDITS)
def test_true_near_duplicates_over_a_shared_context_are_still_removed(edit, index, kind):
    items = shared_context_items()
    copy = edited(items[index], edit)
    assert copy.item_id != items[index].item_id and copy.text != items[index].text
    kept, report = deduplicate(items + [copy])
    assert kept == items  # the human original stays, the incumbent's copy goes
    assert (report.kept, getattr(report, kind), report.removed, report.conflicting_references) == (
        50,
        1,
        1,
        0,
    )


@pytest.mark.parametrize("edit,index,kind", NEAR_EDITS)
def test_the_same_question_with_another_reference_is_a_conflict_never_a_silent_deletion(edit, index, kind):
    """Near-identical questions that disagree are both kept and counted; an identical input keeps
    its most trusted reference (human over incumbent), counted as a resolved conflict."""
    items = shared_context_items()
    copy = edited(items[index], edit, reference="something else")
    kept, report = deduplicate(items + [copy])
    if kind == "exact":
        assert kept == items and (report.conflicts_resolved, report.conflicts_kept, report.removed) == (
            1,
            0,
            1,
        )
    else:
        assert kept == items + [copy] and (
            report.conflicts_resolved,
            report.conflicts_kept,
            report.removed,
        ) == (0, 1, 0)
    conflict = next(e for e in report.examples if e["kind"].startswith("conflicts"))
    assert (conflict["kept"], conflict["other"]) == (items[index].item_id, copy.item_id)
    assert conflict["references"] == [items[index].reference, "something else"]


def test_another_year_is_another_question_even_with_the_same_answer():
    original = shared_context_items()[0]
    text = original.input[-1]["content"]
    assert text.endswith(" 2025?") or text.endswith(" 2026?")
    other_year = QA.item(
        user_messages(text[:-6] + " 2027?"), original.reference, source="logs", label_origin="human"
    )
    kept, report = deduplicate([original, other_year])
    assert kept == [original, other_year] and (report.removed, report.conflicts_kept) == (0, 0)


def test_counts_are_kept_exact_near_and_conflicts_separately():
    items = with_duplicates(shared_context_items())
    kept, report = deduplicate(items)
    assert kept == items[:50] + items[64:66]  # the originals and the two conflicts kept for review
    assert (report.kept, report.exact, report.near, report.conflicts_resolved, report.conflicts_kept) == (
        52,
        4,
        10,
        1,
        2,
    )
    assert (
        report.removed == 15
        and report.conflicting_references == 3
        and report.removed_share == pytest.approx(15 / 67)
    )


SANITY_CASES = [
    # (input text, sanity limits, check expected in the reason or None when the row passes)
    ("Where is my card?", Sanity(), None),
    ("13", Sanity(), None),  # numbers only: no letters to judge the script by
    ("Где моя карта? Я заказал её неделю назад.", Sanity(), "input_script_ok"),
    ("Where is my card? " + "\x00\x01\x02" * 10, Sanity(), "input_script_ok"),
    ("Где моя карта?", Sanity(script="CYRILLIC"), None),
    ("x" * 50, Sanity(max_chars=40), "input_length_ok"),
    ("   ", Sanity(), "input_length_ok"),
]


@pytest.mark.parametrize("text,sanity,failing", SANITY_CASES)
def test_length_and_script_sanity(text, sanity, failing):
    good = [item(f"{n} + {n} = {2 * n}") for n in range(12)]  # no letters: any script passes
    result, _ = validate_items(items_to_table(good + [item(text)]), sanity)
    reasons = [row["_reason"] for row in result.quarantined.to_pylist()]
    assert len(reasons) == (0 if failing is None else 1) and result.accepted_count == 13 - len(reasons)
    if failing:
        assert reasons[0].startswith(failing)
        assert json.loads(result.quarantined.column("input")[0].as_py())[0]["content"] == text


TOOL_CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "search", "arguments": "{}"}}],
}


@pytest.mark.parametrize(
    "messages,ok",
    [
        ([{"role": "user", "content": "hi"}], True),
        (
            [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            ],
            True,
        ),
        (
            [
                {"role": "user", "content": "find X"},
                TOOL_CALL,
                {"role": "tool", "tool_call_id": "c1", "content": "X is Y"},
            ],
            True,
        ),
        ([{"role": "user", "content": None}], False),
        ([{"role": "wizard", "content": "hi"}], False),
        ([], False),
    ],
)
def test_input_must_be_chat_messages(messages, ok):
    from workhorse.tasks.golden.clean import input_is_messages

    assert input_is_messages(json.dumps(messages)) is ok
