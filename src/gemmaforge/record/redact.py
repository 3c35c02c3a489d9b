"""Keep secrets out of everything a run writes: storage credentials, tokens, passwords in URLs.

A local stand-in: a shared `gemmaforge/redact.py` is being written on another branch; when it
lands, this module should defer to it. Secrets are recognised by the name of the setting that
holds them (key, secret, token, password, credential...) and by URL user-info and signed-URL
query parameters, wherever they sit in the config tree.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "<redacted>"
SECRET_NAME = re.compile(
    r"(^key$|secret|token|passw|credential|auth|signature|^sig$|session|private|api_?key|"
    r"access_key|client_key)",
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def redact(value: Any, *, drop: bool = False) -> Any:
    """A copy of `value` with secrets replaced by "<redacted>" (or, with `drop`, left out)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if isinstance(key, str) and is_secret_name(key) and item not in (None, "", False):
                if not drop:
                    out[key] = REDACTED
                continue
            out[key] = redact(item, drop=drop)
        return out
    if isinstance(value, list | tuple):
        return [redact(item, drop=drop) for item in value]
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    return value


def redact_url(url: str) -> str:
    """`url` without a password in its user-info and without secret query parameters."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    secret_query = any(is_secret_name(k) for k, _ in pairs)
    if "@" not in parts.netloc and not secret_query:
        return url  # unchanged, byte for byte (a rebuilt URL may be encoded differently)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if secret_query:
        query = urlencode([(k, REDACTED if is_secret_name(k) else v) for k, v in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
