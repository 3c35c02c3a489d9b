"""Secrets never written down: credentials in options and signed query strings in URLs.

A pre-signed URL (S3 `X-Amz-Signature`, GCS `X-Goog-Signature`, Azure SAS `sig`, a `token=`)
is a password in disguise; so are `data.storage_options` keys such as `secret` or `token`.
Everything gemmaforge writes (config.yaml, reports, model cards, console lines, error
messages) goes through these functions first. A redacted value becomes `REDACTED-<hash>`: the
first 12 hex digits of its sha256, so two runs can still be told apart (same URL or not)
without the value being recoverable.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

SECRET_WORDS = (
    "signature",
    "credential",
    "secret",
    "token",
    "password",
    "passwd",
    "session",
    "sig",
    "key",
    "auth",
    "sas",
    "security",
)
"""A query parameter or option whose lower-cased name contains one of these is a secret."""
_NOT_SECRET = {"key_column", "anon", "endpoint_url", "region_name", "profile"}

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>|`)]+")
_QUERY = re.compile(r"([?&])([A-Za-z0-9_.-]+)=([^&\s'\"<>|`)#]+)")


def mask(value: str) -> str:
    return "REDACTED-" + hashlib.sha256(value.encode("utf-8")).hexdigest()[:12]


def is_secret_name(name: str) -> bool:
    lowered = name.lower()
    return lowered not in _NOT_SECRET and any(word in lowered for word in SECRET_WORDS)


def redact_url(url: str) -> str:
    """`url` with its scheme, host and path kept, any user:password in it and the values of
    secret query parameters replaced by `REDACTED-<hash>`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{mask(userinfo)}@{host}"
    if not parts.query and netloc == parts.netloc:
        return url
    query = "&".join(
        f"{name}={mask(value) if is_secret_name(name) else value}"
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Every URL in `text` redacted (see `redact_url`), and any other `?name=value` /
    `&name=value` with a secret name (a URL's file name kept without its scheme)."""
    if "://" in text:
        text = _URL.sub(lambda match: redact_url(match.group(0)), text)
    if "=" in text:
        text = _QUERY.sub(_mask_pair, text)
    return text


def _mask_pair(match: re.Match) -> str:
    lead, name, value = match.groups()
    if not is_secret_name(name) or value.startswith("REDACTED-"):
        return match.group(0)
    return f"{lead}{name}={mask(value)}"


def redacting(console: Any) -> Any:
    """`console` (a rich Console) with every string it prints redacted first."""
    original = console.print

    def print_redacted(*objects: Any, **options: Any) -> None:
        original(*(redact_text(o) if isinstance(o, str) else o for o in objects), **options)

    console.print = print_redacted
    return console


def redact_options(options: dict[str, Any]) -> dict[str, Any]:
    """`options` with the values of secret-looking keys masked, nested dicts included."""
    out: dict[str, Any] = {}
    for name, value in options.items():
        if isinstance(value, dict):
            out[name] = redact_options(value)
        elif is_secret_name(str(name)) and value not in (None, "", False, True):
            out[name] = mask(str(value))
        else:
            out[name] = redact(value)
    return out


def redact(value: Any) -> Any:
    """A copy of a JSON-like value with every string's URLs redacted and every dict under a
    key named like `storage_options` (or any secret-looking key) masked."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            name: redact_options(item)
            if isinstance(item, dict) and "option" in str(name).lower()
            else redact(item)
            for name, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact(item) for item in value)
    return value
