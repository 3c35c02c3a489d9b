"""The network guard: every verb that touches data or weights runs with outbound connections
refused except to hosts a setting names, and a log of what was contacted.

How: a `sys.addaudithook` hook sees every `socket.getaddrinfo` (a name lookup, the first
step of any connection by name), `socket.connect` and `socket.sendto` of the process, from any
library (fsspec, huggingface_hub, datasets, telemetry threads…), and raises `NetworkRefused`
for a host no rule allows. Audit hooks cannot be removed, so the hook is added once and
consults the guard that is active now (`guard(...)` activates one for the length of a verb).

What is allowed (each rule remembers the setting that allowed it, for the log and messages):
- hosts of remote data named in `data.train` / `data.validation` (https://host, s3:// -> AWS,
  gs:// -> Google Cloud Storage, hf:// -> the Hugging Face hub), the host of
  `data.storage_options.endpoint_url`, and `data.allow_hosts` (for media URLs inside rows);
- the Hugging Face hub and its CDN with `model.allow_download` (plus `HF_ENDPOINT`'s host);
- the hub client's `GEMMAFORGE_HUB_URL` (or its saved login's URL, when read), and
  `GEMMAFORGE_ALLOW_HOSTS` (comma-separated `host[:port]`, e.g. an HTTPS proxy);
- listening: `bind` is never refused (a listening socket is not egress) and a loopback
  connection to a port this process bound (serve's own socket) is allowed;
- non-IP sockets (AF_UNIX, netlink) are allowed: they do not leave the machine.
Loopback is not allowed wholesale: a local port can be a tunnel or proxy out, so a loopback
connection needs a rule like any other (a local S3 endpoint is named in storage_options).

`NetworkRefused` is a `UserError`, deliberately not an `OSError`: HTTP libraries catch
`OSError` on connect and retry or wrap it; another exception type stops them at once. Some
libraries swallow every exception (telemetry threads); the refusal is in the log either way,
and the CLI reports a refusal when the verb fails for any reason (`refusals()`).

`GEMMAFORGE_NETGUARD=off` turns the guard off (the log stays empty); tests use it to check
with their own hook that gemmaforge itself connects nowhere.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from gemmaforge.errors import UserError, problem

ENV_SWITCH = "GEMMAFORGE_NETGUARD"
ENV_RULES = "GEMMAFORGE_NETGUARD_RULES"
"""The active guard's rules, exported so a child process (bench worker) guards the same way."""
ENV_ALLOW = "GEMMAFORGE_ALLOW_HOSTS"
HUB_URL_ENV = "GEMMAFORGE_HUB_URL"

HF_HOSTS = ("huggingface.co", "hf.co")
"""The Hugging Face hub and, as subdomains, its CDN and Xet storage (cdn-lfs.hf.co,
cas-bridge.xethub.hf.co, ...)."""
SCHEME_HOSTS = {
    "s3": ("amazonaws.com",),
    "s3a": ("amazonaws.com",),
    "gs": ("googleapis.com",),
    "gcs": ("googleapis.com",),
    "hf": HF_HOSTS,
}
"""Object-store schemes whose URLs name a bucket, not a host: the provider's domains."""
DEFAULT_PORTS = {"http": 80, "https": 443}

QUIET_ENV = {
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "SCARF_NO_ANALYTICS": "true",
    "ANONYMIZED_TELEMETRY": "False",
    "WANDB_MODE": "disabled",
}
"""Belt and braces: libraries' own telemetry switches (the hook refuses them anyway)."""

LOCAL_NAMES = {"", "localhost", "0.0.0.0", "::", "ip6-localhost"}


class NetworkRefused(UserError):
    """A connection the guard refused; its message names the host and the setting to allow it."""

    def __init__(self, host: str, port: int | None):
        self.host, self.port = host, port
        where = f"{host}:{port}" if port else host
        super().__init__(
            problem(
                f"network: {where}",
                "connection refused by gemmaforge's network guard (it runs offline; no setting "
                "allows this host)",
                "if this host should be reached, name it: remote data in data.train / "
                "data.validation or data.storage_options.endpoint_url, media hosts in "
                "data.allow_hosts, --allow-download for hub models, GEMMAFORGE_HUB_URL for the "
                f"hub, or {ENV_ALLOW}=host[:port] (e.g. a proxy)",
            )
        )


@dataclass(frozen=True)
class Rule:
    host: str
    """A host name (matches itself and its subdomains) or an IP address."""
    port: int | None
    """None: any port."""
    setting: str
    """The setting that allowed it (for the log and the run record)."""

    def matches(self, host: str, port: int | None) -> bool:
        host = host.lower().rstrip(".")
        if self.port is not None and port is not None and port != self.port:
            return False
        return host == self.host or host.endswith("." + self.host)


@dataclass
class Guard:
    rules: list[Rule] = field(default_factory=list)
    log: dict[tuple, dict] = field(default_factory=dict)
    """(event, host, port, allowed, setting) -> log entry with a count."""
    resolved: dict[str, Rule] = field(default_factory=dict)
    """IP address -> the rule whose allowed name resolved to it."""
    listening: set[int] = field(default_factory=set)
    """Ports this process bound (its own listening sockets)."""

    def allow(self, host: str, port: int | None, setting: str) -> None:
        rule = Rule(host.lower().rstrip("."), port, setting)
        if rule.host and rule not in self.rules:
            self.rules.append(rule)

    def rule_for(self, host: str, port: int | None) -> Rule | None:
        return next((r for r in self.rules if r.matches(host, port)), None)

    def note(self, event: str, host: str, port: int | None, rule: Rule | None) -> None:
        setting = rule.setting if rule else None
        key = (event, host, port, rule is not None, setting)
        entry = self.log.setdefault(
            key,
            {
                "event": event,
                "host": host,
                "port": port,
                "allowed": rule is not None,
                "setting": setting,
                "count": 0,
            },
        )
        entry["count"] += 1

    def entries(self) -> list[dict]:
        return [dict(e) for e in self.log.values()]


_active: Guard | None = None
_hooked = False
_lock = threading.Lock()
_inside = threading.local()
"""Set while the guard itself resolves a name (its own lookups are not checked)."""
_real_getaddrinfo = socket.getaddrinfo


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "on").lower() not in ("off", "0", "false", "no")


def active() -> Guard | None:
    return _active


@contextlib.contextmanager
def guard(base: Guard | None = None) -> Iterator[Guard | None]:
    """Run the body with outbound connections refused but for the rules of `base` (plus the
    environment's: GEMMAFORGE_HUB_URL, GEMMAFORGE_ALLOW_HOSTS, rules inherited from a parent
    process). Settings met while it runs (`allow_data`, `allow_hub`) add rules."""
    global _active
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if not enabled():
        yield None
        return
    previous, current = _active, base or Guard()
    _add_env_rules(current)
    _install_hook()
    _active = current
    saved = os.environ.get(ENV_RULES)
    _export(current)
    try:
        yield current
    finally:
        _active = previous
        if saved is None:
            os.environ.pop(ENV_RULES, None)
        else:
            os.environ[ENV_RULES] = saved


def install_inherited() -> None:
    """Guard this whole process with the rules a parent exported (a bench worker's main)."""
    global _active
    if not enabled() or ENV_RULES not in os.environ:
        return
    current = Guard()
    _add_env_rules(current)
    _install_hook()
    _active = current


def log() -> list[dict]:
    """The active guard's log: one entry per (event, host, port, allowed, setting)."""
    return _active.entries() if _active else []


def refusals() -> list[dict]:
    return [e for e in log() if not e["allowed"]]


def allow_url(url: str, setting: str) -> None:
    """Allow the host of `url` (for object-store schemes: the provider's domains)."""
    if _active is None or "://" not in url or url.startswith("file://"):
        return
    for host, port in hosts_of(url):
        _active.allow(host, port, setting)
    _export(_active)


def allow_data(data) -> None:
    """Allow what a DataConfig names: remote data, its storage endpoint, data.allow_hosts."""
    if _active is None:
        return
    for key in ("train", "validation"):
        spec = getattr(data, key)
        for url in [spec] if isinstance(spec, str) else spec or []:
            allow_url(url, f"data.{key}")
    endpoint = (data.storage_options or {}).get("endpoint_url")
    if endpoint:
        allow_url(str(endpoint), "data.storage_options.endpoint_url")
    for host in getattr(data, "allow_hosts", None) or []:
        name, port = _split_host_port(host)
        _active.allow(name, port, "data.allow_hosts")
    _export(_active)


def allow_hub(setting: str = "model.allow_download") -> None:
    """Allow the Hugging Face hub and its CDN (a download the user allowed)."""
    if _active is None:
        return
    for host in HF_HOSTS:
        _active.allow(host, None, setting)
    if os.environ.get("HF_ENDPOINT"):
        allow_url(os.environ["HF_ENDPOINT"], f"{setting} (HF_ENDPOINT)")
    _export(_active)


def hosts_of(url: str) -> list[tuple[str, int | None]]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in SCHEME_HOSTS:
        return [(host, None) for host in SCHEME_HOSTS[scheme]]
    if not parts.hostname:
        return []
    return [(parts.hostname, parts.port or DEFAULT_PORTS.get(scheme))]


def _split_host_port(text: str) -> tuple[str, int | None]:
    text = text.strip()
    if "://" in text:
        return hosts_of(text)[0] if hosts_of(text) else (text, None)
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port) if port.isdigit() else None
    return text.strip("[]"), None


def _add_env_rules(current: Guard) -> None:
    inherited = os.environ.get(ENV_RULES)
    if inherited:
        for host, port, setting in json.loads(inherited):
            current.allow(host, port, setting)
    if os.environ.get(HUB_URL_ENV):
        for host, port in hosts_of(os.environ[HUB_URL_ENV]):
            current.allow(host, port, HUB_URL_ENV)
    for item in filter(None, os.environ.get(ENV_ALLOW, "").split(",")):
        host, port = _split_host_port(item)
        current.allow(host, port, ENV_ALLOW)


def _export(current: Guard) -> None:
    os.environ[ENV_RULES] = json.dumps([[r.host, r.port, r.setting] for r in current.rules])


def _install_hook() -> None:
    global _hooked
    with _lock:
        if _hooked:
            return
        sys.addaudithook(_audit)
        # Wrapped (not replaced) to learn which addresses an allowed name resolved to: the
        # connect that follows is to an address, not a name.
        socket.getaddrinfo = _recording_getaddrinfo
        _hooked = True


def _recording_getaddrinfo(host, port, *args, **kwargs):
    results = _real_getaddrinfo(host, port, *args, **kwargs)
    current = _active
    if current is not None and isinstance(host, str | bytes):
        name = host.decode() if isinstance(host, bytes) else host
        rule = current.rule_for(name, _port(port))
        if rule is not None:
            for *_, address in results:
                current.resolved[str(address[0])] = rule
    return results


def _port(port) -> int | None:
    try:
        return int(port) if port is not None else None
    except (TypeError, ValueError):
        return DEFAULT_PORTS.get(str(port))


def _is_loopback(host: str) -> bool:
    if host.lower() in LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _audit(event: str, args: tuple) -> None:
    current = _active
    if current is None or not event.startswith("socket.") or getattr(_inside, "busy", False):
        return
    if event == "socket.getaddrinfo":
        _check_lookup(current, args)
    elif event in ("socket.connect", "socket.sendto"):
        _check_connect(current, event.removeprefix("socket."), args)
    elif event == "socket.bind":
        sock, address = args
        if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            if address[1]:
                current.listening.add(int(address[1]))
            current.note("bind", str(address[0]), int(address[1]), Rule("", None, "listen"))


def _check_lookup(current: Guard, args: tuple) -> None:
    host, port = args[0], _port(args[1])
    if host is None:
        return
    name = host.decode() if isinstance(host, bytes) else str(host)
    if _is_loopback(name):
        return  # answered from /etc/hosts or parsed; the connect that may follow is checked
    rule = current.rule_for(name, None)
    current.note("lookup", name, port, rule)
    if rule is None:
        raise NetworkRefused(name, port)


def _check_connect(current: Guard, event: str, args: tuple) -> None:
    sock, address = args[0], args[-1]
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
        return  # AF_UNIX, netlink: local by construction
    host, port = str(address[0]), int(address[1])
    rule = current.resolved.get(host) or current.rule_for(host, port)
    if rule is not None and rule.port is not None and rule.port != port:
        rule = current.rule_for(host, port)
    if rule is None and _is_loopback(host) and port in current.listening:
        rule = Rule(host, port, "own listening socket")
    if rule is None:
        rule = _resolve_allowed(current, host, port)
    current.note(event, host, port, rule)
    if rule is None:
        raise NetworkRefused(host, port)


def _resolve_allowed(current: Guard, host: str, port: int) -> Rule | None:
    """Whether `host` (an address) is one an allowed name resolves to, looked up now (the
    address a library connects to may come from its own resolver cache)."""
    _inside.busy = True
    try:
        for rule in current.rules:
            if rule.port not in (None, port):
                continue
            with contextlib.suppress(OSError, UnicodeError):
                for *_, address in _real_getaddrinfo(rule.host, port):
                    current.resolved.setdefault(str(address[0]), rule)
    finally:
        _inside.busy = False
    rule = current.resolved.get(host)
    return rule if rule is not None and rule.port in (None, port) else None


def summary(entries: list[dict]) -> list[str]:
    """Lines for `--offline-proof`: what was contacted, what was refused."""
    contacted = [e for e in entries if e["allowed"] and e["event"] in ("connect", "sendto")]
    refused = [e for e in entries if not e["allowed"]]
    if not contacted and not refused:
        return ["network: no host was contacted (no connection, no name lookup)"]
    lines = []
    for entry in contacted:
        lines.append(
            f"network: contacted {entry['host']}:{entry['port']} ({entry['count']}x), "
            f"allowed by {entry['setting']}"
        )
    for entry in refused:
        where = f"{entry['host']}:{entry['port']}" if entry["port"] else entry["host"]
        lines.append(f"network: REFUSED {entry['event']} {where} ({entry['count']}x)")
    return lines
