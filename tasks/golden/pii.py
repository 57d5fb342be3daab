"""PII scrubbing for text that is about to be stored: emails, phone numbers, card numbers, IBANs.

Golden sets are shared with vendors and committed to reviews, so personal data is replaced by
a typed placeholder (``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IBAN]``) before anything is written.
A false positive destroys an amount, a date or a table cell that a reference may depend on
(``$25,153,000 (2018: $33,978,000)`` once lost its middle to ``[PHONE]``), so every kind but
email is validated: cards by issuer prefix, grouping and the Luhn check, IBANs by the ISO 13616
mod-97 check, phones by libphonenumber (``phonenumbers``: country code, length and number
ranges) after a candidate pattern that never starts or ends inside a longer number, and
context rules that keep amounts, percentages, dates and IP addresses out.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

import phonenumbers

KINDS = ("email", "iban", "card", "phone")
PLACEHOLDER = {kind: f"[{kind.upper()}]" for kind in KINDS}

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# Country code, check digits, then groups of four (printed form) or one compact run.
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b", re.IGNORECASE)
# 13-19 digits, optionally separated by single spaces or dashes; never part of a longer run or
# glued to letters (a digit run inside a hex request id is not a card).
CARD = re.compile(r"(?<![\w])(?<!\d[ -])\d(?:[ -]?\d){12,18}(?![\w])(?![ -]\d)")
# Issuer prefixes of the card networks (Amex, Diners, JCB, Visa, Mastercard, Discover, UnionPay,
# Maestro; 2221-2720 is Mastercard's 2-series): a row of years such as "2018 2017 2016 2015" is not one.
CARD_ISSUER = re.compile(r"[3-6]|2(?:22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)")
# Phone candidates: "+" and digits, or digit groups joined by one separator (space, dash, dot,
# slash), with at most one parenthesised group: first, or after "+CC", "00CC" or a NANP "1"
# ("(415) 555-0132", "+44 (0)20 7946 0958"), so "(415) 555-0132 (415) 555-0133" is two candidates.
# Atomic and possessive: a digit run is never split to make a match. A candidate never starts
# inside a time ("10:20:08.054971"), an amount, an id or a path, nor ends glued to one; a bare
# digit group never starts after another number ("2019 415 555 0132", "17,415", "1 234,05").
_GROUP = r"[ .\-/]\d++"
_AREA = r"[ .\-]?\(\d{1,4}\)[ .\-]?\d++"
PHONE = re.compile(
    r"(?<![\w.+\-/#$€£¥])(?<!\d:)(?:(?=[+(])|(?<!\d[ ,]))"
    rf"(?>\+\d++(?:{_AREA})?(?:{_GROUP})*|\(\+?\d{{1,4}}\)[ .\-]?\d++(?:{_GROUP})*"
    rf"|(?:1|00\d{{1,3}}){_AREA}(?:{_GROUP})*|\d++(?:{_GROUP})+)"
    r"(?![\w%])(?![.\-/]\w)"
)
# Shapes no phone is written in: a signed decimal ("+14.4 09/21/2021"), a date anywhere (a time
# or another cell may follow it), dots mixed with dashes or slashes (versions, "2.27.20-100"),
# an IPv4 address, a decimal number.
_NOT_A_PHONE = re.compile(
    r"\+\d+\.\d+(?![.\d])"
    r"|(?<!\d)(?:\d{4}([-/.])\d\d?\1\d\d?|\d\d?([-/.])\d\d?\2(?:19|20)\d\d|\d\d?/\d\d?/\d\d)(?!\d)"
    r"|\..*[-/]|[-/].*\."
    r"|(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])|^\d+\.\d+$"
)
_NOT_DIGITS = str.maketrans("", "", " .-/()+")  # the only other characters a PHONE match holds
_AMOUNT_BEFORE = re.compile(r"(?:[$€£¥]|\b(?:USD|EUR|GBP|JPY|CHF|CAD|AUD)) ?$")
_PERCENT_AFTER = re.compile(r" ?(?:%|per ?cent\b)")
# "415 555 0132" is also three cells of a numeric row; spaced like that it needs a word that
# announces a phone number shortly before it.
_SPACED_NANP = re.compile(r"(?:1 )?[2-9]\d\d \d{3} \d{4}")
_PHONE_CUE = re.compile(r"phone|call|tel\b|mobile|cell|fax|contact|number|reach|text|sms|whatsapp|dial", re.I)
# Regions whose national numbers start with a trunk 0 and that libphonenumber checks tightly; US
# for the "011" exit code. Left out: Italy ("01122018" is valid there), Belgium and Austria
# ("012 345 678", a spaced amount with a leading zero, is valid there).
NATIONAL_REGIONS = ("GB", "DE", "FR", "NL", "IE", "US")


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


def card_valid(candidate: str) -> bool:
    """A card as printed: one run, groups of four (the last shorter) or Amex/Diners 4-6-5/4-6-4,
    an issuer prefix and a Luhn-valid number."""
    groups = re.split(r"[ -]", candidate)
    lengths = [len(group) for group in groups]
    shaped = len(groups) == 1 or set(lengths[:-1]) == {4} or lengths in ([4, 6, 5], [4, 6, 4])
    digits = "".join(groups)
    return shaped and CARD_ISSUER.match(digits) is not None and luhn_valid(digits)


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


def _parses_valid(number: str, region: str | None) -> bool:
    """libphonenumber's verdict (country code, length, number ranges); unparseable is no phone."""
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(number, region))
    except phonenumbers.NumberParseException:
        return False


@lru_cache(maxsize=4096)  # libphonenumber parses take ~70 us; golden sets repeat their prompts
def phone_like(candidate: str) -> bool:
    """True when ``candidate`` alone is a valid phone number: international (``+`` or ``00``), national
    with a trunk 0 in one of NATIONAL_REGIONS, or North American (3-3-4 digits, optional leading 1)."""
    groups = re.findall(r"\d+", candidate)
    digits = "".join(groups)
    if not 7 <= len(digits) <= 15 or _NOT_A_PHONE.search(candidate):
        return False
    bare = candidate.lstrip("(")
    if bare.startswith("+"):
        return _parses_valid(bare, None)
    if bare.startswith("00"):
        return _parses_valid("+" + bare[2:], None)
    if bare.startswith("0"):
        return len(groups[0]) > 1 and any(_parses_valid(candidate, region) for region in NATIONAL_REGIONS)
    lengths = [len(group) for group in groups]
    nanp = lengths == [3, 3, 4] or (lengths == [1, 3, 3, 4] and digits[0] == "1")
    return nanp and _parses_valid(candidate, "US")


def _is_phone(match: re.Match) -> bool:
    """A PHONE candidate that is a phone number where it stands: not an amount or a percentage,
    and a bare spaced 3-3-4 run only after a word that announces a number."""
    candidate = match.group(0)
    # Cheap rejections first: most candidates are dates, decimals and short codes.
    if not 7 <= len(candidate.translate(_NOT_DIGITS)) <= 15 or _NOT_A_PHONE.search(candidate):
        return False
    text, start, end = match.string, match.start(), match.end()
    if _AMOUNT_BEFORE.search(text, max(0, start - 4), start) or _PERCENT_AFTER.match(text, end):
        return False
    if _SPACED_NANP.fullmatch(candidate) and not _PHONE_CUE.search(text, max(0, start - 40), start):
        return False
    return phone_like(candidate)


def _replace_iban(text: str, counts: Counter) -> str:
    def substitute(match: re.Match) -> str:
        found = match.group(0)
        valid = _longest_valid_iban(found)
        if valid is None:
            return found
        counts["iban"] += 1
        return PLACEHOLDER["iban"] + found[len(valid) :]

    return IBAN.sub(substitute, text)


def _replace_checked(pattern: re.Pattern, kind: str, check, text: str, counts: Counter) -> str:
    """Replace the matches of ``pattern`` for which ``check(match)`` holds."""

    def substitute(match: re.Match) -> str:
        if not check(match):
            return match.group(0)
        counts[kind] += 1
        return PLACEHOLDER[kind]

    return pattern.sub(substitute, text)


def _replace_simple(pattern: re.Pattern, kind: str, text: str, counts: Counter) -> str:
    text, replaced = pattern.subn(PLACEHOLDER[kind], text)
    counts[kind] += replaced
    return text


def _card_match(match: re.Match) -> bool:
    return card_valid(match.group(0))


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
    text = _replace_checked(CARD, "card", _card_match, text, counts)
    return _replace_checked(PHONE, "phone", _is_phone, text, counts)


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
    found += [("card", m.group(0)) for m in CARD.finditer(text) if _card_match(m)]
    found += [("phone", m.group(0)) for m in PHONE.finditer(text) if _is_phone(m)]
    return found
