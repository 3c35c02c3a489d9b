"""API tokens and per-token rate limits.

A token is `gfh_` + 32 random bytes (URL-safe base64); the database keeps only its sha256,
so the token is shown once, when created, and a copy of the database cannot be used to
publish. Rate limits are a token bucket per token (per client address for anonymous
requests), kept in memory: one server process is the deployment this is built for, and a
restart refilling every bucket is harmless.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from gemmaforge.hub.server.db import Namespace, Token

NAMESPACE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, namespace: str) -> str:
    """A new token for `namespace` (created if new); returns the token, stored only hashed."""
    ns = session.scalar(select(Namespace).where(Namespace.name == namespace))
    if ns is None:
        ns = Namespace(name=namespace)
        session.add(ns)
        session.flush()
    token = "gfh_" + secrets.token_urlsafe(32)
    session.add(Token(namespace_id=ns.id, sha256=hash_token(token)))
    session.commit()
    return token


def token_namespace(session: Session, token: str) -> Namespace | None:
    row = session.scalar(select(Token).where(Token.sha256 == hash_token(token)))
    return row.namespace if row else None


class RateLimiter:
    """Token buckets by key: `allow(key)` is False when that key is over its rate."""

    def __init__(self, rate_per_s: float, burst: int):
        self.rate, self.burst = rate_per_s, burst
        self.buckets: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def allow(self, key: str) -> bool:
        with self.lock:
            now = time.monotonic()
            level, last = self.buckets.get(key, (float(self.burst), now))
            level = min(float(self.burst), level + (now - last) * self.rate)
            if level < 1:
                self.buckets[key] = (level, now)
                return False
            self.buckets[key] = (level - 1, now)
            if len(self.buckets) > 100_000:  # forget idle buckets rather than grow forever
                self.buckets.clear()
            return True
