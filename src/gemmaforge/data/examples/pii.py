"""Personal data in text: find common identifiers, mask them for reports, or replace them
with typed placeholders (`data.redact_pii`). A heuristic, not a guarantee.

What is found, and how it is told apart from other numbers:
- EMAIL: local@domain.tld.
- CARD: 13-19 digits (spaces or dashes allowed) passing the Luhn checksum, with a known
  issuer prefix (Visa 4, Mastercard 51-55 / 2221-2720, Amex 34/37, Discover 6011/65, ...).
- IBAN: country code, 2 check digits and 11-30 letters/digits (spaces allowed) whose
  ISO 13616 mod-97 remainder is 1.
- SSN (US): AAA-GG-SSSS with the SSA's rules (area not 000, 666 or 9xx; group not 00; serial
  not 0000). Written with dashes only: nine bare digits are too often something else.
- NINO (UK National Insurance number): two prefix letters from the allowed set (not BG, GB,
  KN, NK, NT, TN, ZZ), six digits, a suffix A-D. It has no checksum.
- TAX_ID (German Steuer-ID): 11 digits, not starting with 0, ISO 7064 MOD 11,10 check digit,
  and in the first ten digits one digit repeated two or three times (the BZSt's rule).
- PHONE: international (+CC ...) or North American ((555) 123-4567) style, 7 to 15 digits,
  after the checksummed kinds (so a card is never also a phone).
- IP: IPv4 and IPv6 addresses that `ipaddress` parses.

Names, street addresses and dates of birth are not found: they need a language model (or a
dictionary), which this deliberately is not. Precision and recall on the test set the tests
generate are in docs/privacy.md.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

KINDS = ("EMAIL", "CARD", "IBAN", "SSN", "NINO", "TAX_ID", "PHONE", "IP")


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int
    end: int
    text: str

    @property
    def placeholder(self) -> str:
        return f"<{self.kind}>"


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


CARD_PREFIX = re.compile(r"^(4|5[1-5]|2(2[2-9]|[3-6]\d|7[01]|720)|3[47]|6011|65|64[4-9]|35|36|30)")


def card_ok(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    return 13 <= len(digits) <= 19 and bool(CARD_PREFIX.match(digits)) and luhn_ok(digits)


def iban_ok(text: str) -> bool:
    compact = text.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


def ssn_ok(text: str) -> bool:
    area, group, serial = text.split("-")
    return (
        area not in ("000", "666")
        and not area.startswith("9")
        and group != "00"
        and serial != "0000"
    )


NINO_BAD_PREFIX = {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}


def nino_ok(text: str) -> bool:
    return text.replace(" ", "")[:2].upper() not in NINO_BAD_PREFIX


def steuer_id_ok(digits: str) -> bool:
    if len(digits) != 11 or digits[0] == "0":
        return False
    counts = [digits[:10].count(d) for d in set(digits[:10])]
    if sorted(c for c in counts if c > 1) not in ([2], [3]):
        return False
    product = 10
    for ch in digits[:10]:
        total = (int(ch) + product) % 10 or 10
        product = (total * 2) % 11
    check = (11 - product) % 10
    return check == int(digits[10])


def ip_ok(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def phone_ok(text: str) -> bool:
    return 7 <= sum(ch.isdigit() for ch in text) <= 15


DETECTORS: list[tuple[str, re.Pattern, Callable[[str], bool]]] = [
    (
        "EMAIL",
        re.compile(
            r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
        ),
        lambda _: True,
    ),
    ("IBAN", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"), iban_ok),
    ("CARD", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), card_ok),
    ("SSN", re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])"), ssn_ok),
    (
        "NINO",
        re.compile(
            r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b", re.IGNORECASE
        ),
        nino_ok,
    ),
    ("TAX_ID", re.compile(r"(?<!\d)\d{11}(?!\d)"), steuer_id_ok),
    (
        "IP",
        re.compile(
            r"(?<![\w.:])(?:(?:\d{1,3}\.){3}\d{1,3}|(?:[0-9A-Fa-f]{1,4}:){2,7}:?[0-9A-Fa-f]{0,4}"
            r"(?::[0-9A-Fa-f]{1,4})*|::1)(?![\w.:])"
        ),
        ip_ok,
    ),
    (
        "PHONE",
        re.compile(
            r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"
            r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4})(?!\w)"
        ),
        phone_ok,
    ),
]


def find_pii(text: str) -> list[Finding]:
    """Non-overlapping findings in `text`, in order; earlier detectors win an overlap."""
    found: list[Finding] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern, valid in DETECTORS:
        for match in pattern.finditer(text):
            start, end = match.span()
            if any(start < b and a < end for a, b in taken):
                continue
            if valid(match.group()):
                found.append(Finding(kind, start, end, match.group()))
                taken.append((start, end))
    return sorted(found, key=lambda f: f.start)


def redact_text(text: str) -> str:
    """`text` with each finding replaced by its typed placeholder (<EMAIL>, <CARD>, ...)."""
    out, last = [], 0
    for finding in find_pii(text):
        out.append(text[last : finding.start])
        out.append(finding.placeholder)
        last = finding.end
    out.append(text[last:])
    return "".join(out)


def mask(text: str) -> str:
    """A finding as reports show it: its shape, never its value (`j***@e***.com`)."""
    if "@" in text:
        local, domain = text.split("@", 1)
        tld = domain.rsplit(".", 1)[-1]
        return f"{local[:1]}***@{domain[:1]}***.{tld}"
    keep = 2 if len(text) > 8 else 0
    masked = "".join("*" if ch.isalnum() else ch for ch in text[: len(text) - keep])
    return masked + text[len(text) - keep :]


def redact_conversation(conv):
    """A Conversation (formats.py) with every text redacted; media parts untouched."""

    def content(value: Any) -> Any:
        if isinstance(value, str):
            return redact_text(value)
        if isinstance(value, list):
            return [
                {**part, "text": redact_text(part["text"])} if part.get("type") == "text" else part
                for part in value
            ]
        return value

    messages = [{**m, "content": content(m["content"])} for m in conv.messages]
    text = redact_text(conv.text) if conv.text is not None else None
    return replace(conv, messages=messages, text=text)
