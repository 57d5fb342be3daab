"""PII scrubbing: what is replaced, what must survive, and the checksums that decide.

Two corpora under tests/data back the tables here: ``pii_false_positive_corpus.txt`` (10-K
sentences, numeric tables, dates, timestamps, code and logs: zero replacements) and
``pii_planted_corpus.tsv`` (PII in many formats: every one replaced, in every carrier sentence).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from workhorse.tasks.golden.pii import (
    PLACEHOLDER,
    card_valid,
    find_pii,
    iban_valid,
    luhn_valid,
    phone_like,
    scrub_text,
    scrub_value,
)

DATA = Path(__file__).parent / "data"
FALSE_POSITIVE_CORPUS = [
    line for line in (DATA / "pii_false_positive_corpus.txt").read_text().splitlines() if line.strip()
]
PLANTED = [
    tuple(line.split("\t"))
    for line in (DATA / "pii_planted_corpus.tsv").read_text().splitlines()
    if line and not line.startswith("#")
]
# Where planted PII appears: prose, alone, CSV and markdown cells, and beside amounts, years and times.
CARRIERS = [
    "Customer wrote: my details are {}, please help.",
    "{}",
    "reach me at {} or by post",
    "Revenue was $25,153,000 (2018: $33,978,000); investor relations: {} (9:00-17:00).",
    "| Jane Doe | {} | 2019-12-31 |",
    "name,contact,since\nJane,{},2019-12-31",
    "Phone/IBAN/email: {}. Thanks!",
]

# Test numbers published by the card networks and the IBAN registry examples.
CARDS = ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005", "6011111111111117"]
IBANS = [
    "DE89 3704 0044 0532 0130 00",
    "GB82WEST12345698765432",
    "FR1420041010050500013M02606",
    "NL91ABNA0417164300",
]
PHONES = [
    "+44 20 7946 0958",
    "+1 (415) 555-0132",
    "(415) 555-0132",
    "415-555-0132",
    "020 7946 0958",
    "0049 30 901820",
    "+1 415 555 0132",
    "1-800-555-0199",
    "+44 (0)20 7946 0958",
    "01 23 45 67 89",
]
EMAILS = ["jane.doe@example.com", "ops+alerts@mail.acme-corp.co.uk", "X_Y%z@sub.domain.io"]


@pytest.mark.parametrize(
    "kind,value",
    [("card", c) for c in CARDS]
    + [("iban", i) for i in IBANS]
    + [("phone", p) for p in PHONES]
    + [("email", e) for e in EMAILS],
)
def test_each_kind_is_replaced_and_counted(kind, value):
    counts = Counter()
    text = f"Customer wrote: my details are {value}, please help."
    scrubbed = scrub_text(text, counts)
    assert value not in scrubbed
    assert f"[{kind.upper()}]" in scrubbed
    assert counts == Counter({kind: 1})
    assert scrubbed.startswith("Customer wrote: my details are ") and scrubbed.endswith(", please help.")


@pytest.mark.parametrize(
    "text",
    [
        "order 4111 1111 1111 1112 is late",  # Luhn-invalid card-shaped run
        "ticket 4111111111111112",  # the same, no spaces
        "ref 1234567890123 shipped",  # 13 digits, Luhn-invalid
        "iban DE89 3704 0044 0532 0130 01 is wrong",  # mod-97 fails
        "table for 4 at 7.30pm on 2024-01-15",  # dates and times are not phones
        "it cost 1,200.50 on 12/05/2024 for 13 people",
        "version 10.2.3 and port 8080",
        "request chatcmpl-dc8aba4111111111111111b7 failed",  # a Luhn-valid run inside an id
        "$25,153,000 (2018: $33,978,000)",  # was "$25,153,[PHONE]: $33,978,000)"
        "years 2018 2017 2016 2015 restated",  # Luhn-valid, but no card issuer starts with 2018
        "Order #415-555-0132 and serial 020-7946-0958-A1",  # phone-shaped ids
        "Headcount 512 634 1024 at 2019-12-31T23:59:59+00:00",  # three cells, no word announcing a phone
        "margin +12.5 % and 0.415 555 0132 per cent",
        "server 192.168.100.200:8080 runs 4.15.555.0132",
    ],
)
def test_non_pii_digit_runs_are_left_alone(text):
    counts = Counter()
    assert scrub_text(text, counts) == text
    assert sum(counts.values()) == 0


def test_false_positive_corpus_keeps_every_line():
    assert len(FALSE_POSITIVE_CORPUS) >= 150
    counts = Counter()
    changed = [(line, scrub_text(line, counts)) for line in FALSE_POSITIVE_CORPUS]
    assert [pair for pair in changed if pair[0] != pair[1]] == []
    assert +counts == Counter()
    assert [line for line in FALSE_POSITIVE_CORPUS if find_pii(line)] == []


def test_false_positive_corpus_as_one_text():
    """Tables and code span lines: one multi-line text must survive as well."""
    text = "\n".join(FALSE_POSITIVE_CORPUS)
    assert scrub_text(text) == text


@pytest.mark.parametrize("kind,value", PLANTED, ids=[f"{kind}:{value}" for kind, value in PLANTED])
def test_planted_corpus_is_replaced_in_every_carrier(kind, value):
    for carrier in CARRIERS:
        counts = Counter()
        text = carrier.format(value)
        assert scrub_text(text, counts) == carrier.format(PLACEHOLDER[kind]), text
        assert counts == Counter({kind: 1}), text
        assert kind in {found for found, _ in find_pii(text)}, text


def test_planted_corpus_covers_every_kind_and_the_seeded_values():
    assert Counter(kind for kind, _ in PLANTED).keys() == set(PLACEHOLDER)
    values = {value for _, value in PLANTED}
    assert set(CARDS + IBANS + PHONES + EMAILS) <= values


@pytest.mark.parametrize(
    "candidate,valid",
    [
        ("+44 20 7946 0958", True),
        ("0049 30 901820", True),
        ("020 7946 0958", True),
        ("(415) 555-0132", True),
        ("1-800-555-0199", True),
        ("011 44 20 7946 0958", True),
        ("+0 (2018", False),  # no country code 0
        ("000 (2018", False),
        ("123-456-7890", False),  # no NANP area code starts with 1
        ("+1 415 555 0132 99", False),  # too long for the plan
        ("01.12.2018", False),
        ("2018-12-31", False),
        ("192.168.100.200", False),
        ("4155-5501-32", False),  # not a NANP grouping
    ],
)
def test_phone_like_validates_the_number(candidate, valid):
    assert phone_like(candidate) is valid


@pytest.mark.parametrize(
    "candidate,valid",
    [
        ("4111 1111 1111 1111", True),
        ("3782 822463 10005", True),
        ("2223 0031 2200 3222", True),
        ("2018 2017 2016 2015", False),  # Luhn-valid, no issuer
        ("1234 5678 9012 3452", False),  # Luhn-valid, no issuer
        ("41 1111 1111 1111 11", False),  # Luhn-valid, not grouped like a card
    ],
)
def test_card_valid(candidate, valid):
    assert card_valid(candidate) is valid


@pytest.mark.parametrize(
    "digits,valid",
    [("4111111111111111", True), ("4111111111111112", False), ("79927398713", True), ("79927398710", False)],
)
def test_luhn(digits, valid):
    assert luhn_valid(digits) is valid


@pytest.mark.parametrize(
    "iban,valid",
    [(i, True) for i in IBANS]
    + [("DE89370400440532013001", False), ("GB82WEST1234569876543", False), ("XX00", False)],
)
def test_iban_checksum(iban, valid):
    assert iban_valid(iban) is valid


def test_iban_followed_by_capitalised_word_keeps_the_word():
    assert scrub_text("pay to DE89 3704 0044 0532 0130 00 THANKS") == "pay to [IBAN] THANKS"


def test_phones_side_by_side_are_each_replaced():
    text = "Tel (415) 555-0132 Fax (415) 555-0133, mobile +1 415 555 0134 +44 20 7946 0958"
    assert scrub_text(text) == "Tel [PHONE] Fax [PHONE], mobile [PHONE] [PHONE]"


def test_several_values_in_one_text_and_nested_values():
    counts = Counter()
    value = {
        "messages": [{"role": "user", "content": f"mail {EMAILS[0]} or call {PHONES[0]}"}],
        "note": [f"card {CARDS[0]}", 7, None],
    }
    scrubbed = scrub_value(value, counts)
    assert scrubbed["note"][1:] == [7, None]
    assert counts == Counter({"email": 1, "phone": 1, "card": 1})
    assert find_pii(str(scrubbed)) == []
    assert {kind for kind, _ in find_pii(str(value))} == {"email", "phone", "card"}
