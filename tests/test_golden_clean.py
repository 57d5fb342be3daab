"""Dedup (exact, near with MinHash LSH) and the input sanity checks of the golden contract."""

from __future__ import annotations

import csv
import itertools
import json

import pytest

from workhorse.tasks.golden_clean import (Sanity, candidate_pairs, deduplicate, jaccard, shingles,
                                          validate_items)
from workhorse.tasks.golden_item import items_to_table, user_messages
from workhorse.tasks.golden_sources import GoldenSpec

SPEC = GoldenSpec("routing", "classification", labels=["card_arrival", "lost_or_stolen_card", "other"])


def item(text, reference="card_arrival", origin="incumbent", spec=SPEC):
    return spec.item(user_messages(text), reference, source="test", label_origin=origin)


def test_exact_duplicates_ignore_case_punctuation_and_spacing_and_keep_the_best_reference():
    items = [item("Where is my card?"), item("where is   my CARD", "lost_or_stolen_card", origin="human"),
             item("Where is my card!!", "other", origin="import"), item("I lost my card", "lost_or_stolen_card")]
    kept, report = deduplicate(items)
    assert [(i.text, i.label_origin) for i in kept] == [("where is   my CARD", "human"), ("I lost my card", "incumbent")]
    assert (report.exact, report.near, report.conflicting_references) == (2, 0, 2)


ORDER = "I ordered a new card over a week ago and it still has not arrived at my address"


@pytest.mark.parametrize("left,right,threshold,duplicate", [
    (ORDER, ORDER.replace("address", "adress"), 0.9, True),
    (ORDER, ORDER + " please", 0.9, True),
    (ORDER, ORDER + ", please help", 0.9, False),  # 13 new characters of 90: Jaccard 0.85
    (ORDER, ORDER + ", please help", 0.8, True),
    ("Can I top up my account with a bank transfer from another country?",
     "Can I top up my account with a card payment from another country?", 0.9, False),
    ("What is 10 + 10?", "What is 11 + 11?", 0.9, False),
])
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
    truth = {(a, b) for a, b in itertools.combinations(range(len(sets)), 2) if jaccard(sets[a], sets[b]) >= 0.9}
    found = candidate_pairs(sets)
    assert truth and truth <= found
    assert len(found) < len(sets) * 10  # candidates stay near-linear, not all pairs


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


TOOL_CALL = {"role": "assistant", "content": None,
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "search", "arguments": "{}"}}]}


@pytest.mark.parametrize("messages,ok", [
    ([{"role": "user", "content": "hi"}], True),
    ([{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}], True),
    ([{"role": "user", "content": "find X"}, TOOL_CALL, {"role": "tool", "tool_call_id": "c1", "content": "X is Y"}], True),
    ([{"role": "user", "content": None}], False),
    ([{"role": "wizard", "content": "hi"}], False),
    ([], False),
])
def test_input_must_be_chat_messages(messages, ok):
    from workhorse.tasks.golden_clean import input_is_messages

    assert input_is_messages(json.dumps(messages)) is ok
