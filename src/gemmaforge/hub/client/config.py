"""Where the hub client finds its server and token, and where it caches pulled adapters.

Order: `GEMMAFORGE_HUB_URL` / `GEMMAFORGE_HUB_TOKEN`, then the file `gemmaforge hub login`
writes (`$XDG_CONFIG_HOME/gemmaforge/hub.json`, default `~/.config/...`, mode 0600: it holds
a publishing token). The cache is `$GEMMAFORGE_HUB_CACHE`, else `$XDG_CACHE_HOME/gemmaforge/hub`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gemmaforge import netguard
from gemmaforge.errors import UserError, problem


def config_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gemmaforge" / "hub.json"


def cache_dir() -> Path:
    if os.environ.get("GEMMAFORGE_HUB_CACHE"):
        return Path(os.environ["GEMMAFORGE_HUB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gemmaforge" / "hub"


def save_login(url: str, token: str) -> Path:
    """Write the login file readable by its owner only (created 0600, never wider)."""
    path = config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url.rstrip("/"), "token": token}, handle)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def load_login() -> tuple[str | None, str | None]:
    url, token = os.environ.get("GEMMAFORGE_HUB_URL"), os.environ.get("GEMMAFORGE_HUB_TOKEN")
    path = config_file()
    if path.is_file() and (url is None or token is None):
        try:
            saved = json.loads(path.read_text("utf-8"))
        except ValueError:
            raise UserError(
                problem(str(path), "is not valid JSON", "run `gemmaforge hub login URL --token T`")
            ) from None
        if url is None and saved.get("url"):
            url = saved["url"]
            # The login file names the hub as GEMMAFORGE_HUB_URL would: the guard allows it.
            netguard.allow_url(url, f"the hub login ({path})")
        token = token or saved.get("token")
    return url, token
