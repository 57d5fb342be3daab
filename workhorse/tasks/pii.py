"""PII scrubbing for text that is about to be stored: emails, phone numbers, card numbers, IBANs.

Golden sets are shared with vendors and committed to reviews, so personal data is replaced by
a typed placeholder (``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IBAN]``) before anything is written.
Card numbers are only replaced when they pass the Luhn check and IBANs only when they pass the
ISO 13616 mod-97 check, so order numbers and other digit runs survive. Phones are recognised
conservatively (an international ``+``/``00`` prefix, or a common national grouping) because a
false positive destroys a date or an amount that a reference may depend on.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

KINDS = ("email", "iban", "card", "phone")
PLACEHOLDER = {kind: f"[{kind.upper()}]" for kind in KINDS}

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# Country code, check digits, then groups of four (printed form) or one compact run.
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b", re.IGNORECASE)
# 13-19 digits, optionally separated by single spaces or dashes; never part of a longer run or
# glued to letters (a digit run inside a hex request id is not a card).
CARD = re.compile(r"(?<![\w])(?<!\d[ -])\d(?:[ -]?\d){12,18}(?![\w])(?![ -]\d)")
# Phones: "+44 20 7946 0958", "0044 ...", "(415) 555-0132", "415-555-0132", "020 7946 0958".
PHONE = re.compile(
    r"(?<![\w+/.-])(?<!\d[ .-])(?:"
    r"(?:\+|00)\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}"
    r"|\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4}"
    r"|0\d{2,4}[ -]\d{3,4}[ -]?\d{3,4}"
    r")(?!\d)(?![ .-]\d)"
)


@dataclass
class ScrubReport:
    """How many values of each kind were replaced (over every text scrubbed with it)."""

    counts: Counter = field(default_factory=Counter)

    def add(self, other: Counter) -> None:
        self.counts.update(other)

    def as_dict(self) -> dict[str, int]:
        return {kind: int(self.counts.get(kind, 0)) for kind in KINDS}

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to numbers, mod 97 == 1."""
    compact = candidate.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34 or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _longest_valid_iban(match: str) -> str | None:
    """The longest prefix (at a group boundary) that is a valid IBAN: the regex may swallow a
    following upper-case word or number group, which would break the checksum."""
    groups = match.split(" ") if " " in match else [match]
    for end in range(len(groups), 0, -1):
        prefix = " ".join(groups[:end])
        if iban_valid(prefix):
            return prefix
    return None


def _replace_iban(text: str, counts: Counter) -> str:
    def substitute(match: re.Match) -> str:
        found = match.group(0)
        valid = _longest_valid_iban(found)
        if valid is None:
            return found
        counts["iban"] += 1
        return PLACEHOLDER["iban"] + found[len(valid):]

    return IBAN.sub(substitute, text)


def _replace_card(text: str, counts: Counter) -> str:
    def substitute(match: re.Match) -> str:
        if not luhn_valid(re.sub(r"\D", "", match.group(0))):
            return match.group(0)
        counts["card"] += 1
        return PLACEHOLDER["card"]

    return CARD.sub(substitute, text)


def _replace_simple(pattern: re.Pattern, kind: str, text: str, counts: Counter) -> str:
    text, replaced = pattern.subn(PLACEHOLDER[kind], text)
    counts[kind] += replaced
    return text


def phone_like(candidate: str) -> bool:
    """E.164 allows at most 15 digits; fewer than 7 is an extension, a code or a count."""
    return 7 <= sum(char.isdigit() for char in candidate) <= 15


def _replace_phone(text: str, counts: Counter) -> str:
    def substitute(match: re.Match) -> str:
        if not phone_like(match.group(0)):
            return match.group(0)
        counts["phone"] += 1
        return PLACEHOLDER["phone"]

    return PHONE.sub(substitute, text)


def scrub_text(text: str | None, counts: Counter | None = None) -> str | None:
    """Replace PII in one text; counts per kind are added to ``counts`` when given.

    Order matters: emails first (they contain digits), then IBANs and cards (long digit runs a
    phone pattern must never see), then phones.
    """
    if not text:
        return text
    counts = counts if counts is not None else Counter()
    text = _replace_simple(EMAIL, "email", text, counts)
    text = _replace_iban(text, counts)
    text = _replace_card(text, counts)
    return _replace_phone(text, counts)


def scrub_value(value, counts: Counter):
    """Scrub every string inside a JSON-like value (messages, metadata), keeping its shape."""
    if isinstance(value, str):
        return scrub_text(value, counts)
    if isinstance(value, list):
        return [scrub_value(item, counts) for item in value]
    if isinstance(value, dict):
        return {key: scrub_value(item, counts) for key, item in value.items()}
    return value


def find_pii(text: str) -> list[tuple[str, str]]:
    """(kind, value) pairs still present in ``text``; used to assert that stored files are clean."""
    found: list[tuple[str, str]] = [("email", m.group(0)) for m in EMAIL.finditer(text)]
    found += [("iban", m.group(0)) for m in IBAN.finditer(text) if _longest_valid_iban(m.group(0))]
    found += [("card", m.group(0)) for m in CARD.finditer(text)
              if luhn_valid(re.sub(r"\D", "", m.group(0)))]
    found += [("phone", m.group(0)) for m in PHONE.finditer(text) if phone_like(m.group(0))]
    return found
