"""PII scrubbing: what is replaced, what must survive, and the checksums that decide."""

from __future__ import annotations

from collections import Counter

import pytest

from workhorse.tasks.pii import find_pii, iban_valid, luhn_valid, scrub_text, scrub_value

# Test numbers published by the card networks and the IBAN registry examples.
CARDS = ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005", "6011111111111117"]
IBANS = ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "FR1420041010050500013M02606",
         "NL91ABNA0417164300"]
PHONES = ["+44 20 7946 0958", "+1 (415) 555-0132", "(415) 555-0132", "415-555-0132", "020 7946 0958",
          "0049 30 901820"]
EMAILS = ["jane.doe@example.com", "ops+alerts@mail.acme-corp.co.uk", "X_Y%z@sub.domain.io"]


@pytest.mark.parametrize("kind,value", [("card", c) for c in CARDS] + [("iban", i) for i in IBANS]
                         + [("phone", p) for p in PHONES] + [("email", e) for e in EMAILS])
def test_each_kind_is_replaced_and_counted(kind, value):
    counts = Counter()
    text = f"Customer wrote: my details are {value}, please help."
    scrubbed = scrub_text(text, counts)
    assert value not in scrubbed
    assert f"[{kind.upper()}]" in scrubbed
    assert counts == Counter({kind: 1})
    assert scrubbed.startswith("Customer wrote: my details are ") and scrubbed.endswith(", please help.")


@pytest.mark.parametrize("text", [
    "order 4111 1111 1111 1112 is late",           # Luhn-invalid card-shaped run
    "ticket 4111111111111112",                     # the same, no spaces
    "ref 1234567890123 shipped",                   # 13 digits, Luhn-invalid
    "iban DE89 3704 0044 0532 0130 01 is wrong",   # mod-97 fails
    "table for 4 at 7.30pm on 2024-01-15",          # dates and times are not phones
    "it cost 1,200.50 on 12/05/2024 for 13 people",
    "version 10.2.3 and port 8080",
    "request chatcmpl-dc8aba4111111111111111b7 failed",  # a Luhn-valid run inside an id
])
def test_non_pii_digit_runs_are_left_alone(text):
    counts = Counter()
    assert scrub_text(text, counts) == text
    assert sum(counts.values()) == 0


@pytest.mark.parametrize("digits,valid", [("4111111111111111", True), ("4111111111111112", False),
                                          ("79927398713", True), ("79927398710", False)])
def test_luhn(digits, valid):
    assert luhn_valid(digits) is valid


@pytest.mark.parametrize("iban,valid", [(i, True) for i in IBANS] + [
    ("DE89370400440532013001", False), ("GB82WEST1234569876543", False), ("XX00", False)])
def test_iban_checksum(iban, valid):
    assert iban_valid(iban) is valid


def test_iban_followed_by_capitalised_word_keeps_the_word():
    assert scrub_text("pay to DE89 3704 0044 0532 0130 00 THANKS") == "pay to [IBAN] THANKS"


def test_several_values_in_one_text_and_nested_values():
    counts = Counter()
    value = {"messages": [{"role": "user", "content": f"mail {EMAILS[0]} or call {PHONES[0]}"}],
             "note": [f"card {CARDS[0]}", 7, None]}
    scrubbed = scrub_value(value, counts)
    assert scrubbed["note"][1:] == [7, None]
    assert counts == Counter({"email": 1, "phone": 1, "card": 1})
    assert find_pii(str(scrubbed)) == []
    assert {kind for kind, _ in find_pii(str(value))} == {"email", "phone", "card"}
