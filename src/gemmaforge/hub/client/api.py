"""`HubClient`: the hub's HTTP API as Python calls, with every 4xx turned into a UserError.

Transfers stream in 1 MiB blocks both ways (requests), so memory stays flat whatever the size
of an adapter.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import quote

from gemmaforge.errors import UserError, problem
from gemmaforge.files import sha256_file
from gemmaforge.hub.client.config import load_login
from gemmaforge.hub.filters import Filters

TIMEOUT = (10, 300)
CHUNK = 1 << 20


def split_name(ref: str) -> tuple[str, str, str | None]:
    """`ns/name[@version]` -> (ns, name, version or None)."""
    ref = ref.removeprefix("hub://")
    full, _, version = ref.partition("@")
    namespace, sep, name = full.partition("/")
    if not (namespace and sep and name) or "/" in name:
        raise UserError(
            problem(None, f"{ref!r} is not NAMESPACE/NAME[@VERSION]", "e.g. clinic/dictation@v1")
        )
    return namespace, name, version or None


class HubClient:
    def __init__(self, url: str | None = None, token: str | None = None):

        saved_url, saved_token = load_login()
        self.url = (url or saved_url or "").rstrip("/")
        self.token = token if token is not None else saved_token
        if not self.url:
            raise UserError(
                problem(
                    None,
                    "no hub given",
                    "set GEMMAFORGE_HUB_URL or run `gemmaforge hub login URL --token TOKEN`",
                )
            )

    # ---- plumbing ----------------------------------------------------------------------

    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def request(self, method: str, path: str, ok=(200, 201), **kwargs):
        import requests

        url = f"{self.url}{path}"
        try:
            response = requests.request(
                method, url, headers=self._headers(), timeout=TIMEOUT, **kwargs
            )
        except requests.RequestException as exc:
            raise UserError(
                problem(self.url, f"cannot reach the hub ({exc})", "check the URL and the server")
            ) from None
        if response.status_code not in ok:
            raise UserError(self._problems(method, path, response))
        return response

    def _problems(self, method: str, path: str, response) -> list[str]:
        try:
            body = response.json()
            message = body.get("error", response.text)
            details = body.get("problems") or []
        except ValueError:
            message, details = response.text[:300], []
        fixes = {
            401: "pass a token: `gemmaforge hub login URL --token TOKEN` or GEMMAFORGE_HUB_TOKEN",
            403: "use a token of that namespace",
            409: "publish under a new version",
            413: "the hub caps request sizes; ask its operator",
            429: "wait a moment and retry",
        }
        where = f"{self.url} ({method} {path}, HTTP {response.status_code})"
        return [problem(where, message, fixes.get(response.status_code)), *details]

    # ---- calls -------------------------------------------------------------------------

    def health(self) -> dict:
        return self.request("GET", "/api/health").json()

    def add_key(self, pem: str) -> dict:
        return self.request("POST", "/api/keys", json={"pem": pem}).json()

    def keys(self, namespace: str) -> list[dict]:
        return self.request("GET", f"/api/namespaces/{quote(namespace)}/keys").json()["keys"]

    def add_base(self, record: dict) -> dict:
        return self.request("POST", "/api/bases", json=record).json()

    def bases(self, **filters) -> list[dict]:
        params = {k: v for k, v in filters.items() if v is not None}
        return self.request("GET", "/api/bases", params=params).json()["bases"]

    def has_blob(self, sha256: str) -> bool:
        return self.request("HEAD", f"/api/blobs/{sha256}", ok=(200, 404)).status_code == 200

    def upload(self, path: Path, sha256: str | None = None) -> str:
        """Upload one file (streamed; skipped if the hub has it); returns its sha256."""
        sha256 = sha256 or sha256_file(path)
        if not self.has_blob(sha256):
            with Path(path).open("rb") as handle:
                self.request("PUT", f"/api/blobs/{sha256}", data=handle)
        return sha256

    def commit(self, namespace: str, name: str, body: dict) -> dict:
        path = f"/api/adapters/{quote(namespace)}/{quote(name)}/versions"
        return self.request("POST", path, json=body).json()

    def search(self, query: str | None = None, limit: int = 20, **filters) -> list:
        """Search; `filters` are the other fields of `gemmaforge.hub.filters.Filters` (base,
        modality, domain, licence, rank, signer, metric, fits, sort, ...), checked here as
        the server checks them (a UserError names each bad one)."""
        params = Filters.parse(q=query, **filters).query_params()
        params["limit"] = limit
        return self.request("GET", "/api/adapters", params=params).json()["results"]

    def adapter(self, namespace: str, name: str) -> dict:
        return self.request("GET", f"/api/adapters/{quote(namespace)}/{quote(name)}").json()

    def version(self, namespace: str, name: str, ref: str | None, pull: bool = False) -> dict:
        path = f"/api/adapters/{quote(namespace)}/{quote(name)}/versions/{quote(ref or 'latest')}"
        return self.request("GET", path, params={"pull": "true"} if pull else None).json()

    def rate(self, namespace: str, name: str, ref: str, stars: int, review: str = "") -> dict:
        path = f"/api/adapters/{quote(namespace)}/{quote(name)}/versions/{quote(ref)}/ratings"
        return self.request("POST", path, json={"stars": stars, "review": review}).json()

    def report(self, namespace: str, name: str, ref: str, reason: str) -> dict:
        path = f"/api/adapters/{quote(namespace)}/{quote(name)}/versions/{quote(ref)}/reports"
        return self.request("POST", path, json={"reason": reason}).json()

    def deprecate(self, namespace: str, name: str, ref: str, note: str, replaced_by=None):
        path = f"/api/adapters/{quote(namespace)}/{quote(name)}/versions/{quote(ref)}/deprecate"
        body = {"note": note, "replaced_by": replaced_by}
        return self.request("POST", path, json=body).json()

    def yank(self, namespace: str, name: str, ref: str, reason: str) -> dict:
        path = f"/api/adapters/{quote(namespace)}/{quote(name)}/versions/{quote(ref)}/yank"
        return self.request("POST", path, json={"reason": reason}).json()

    def download(self, sha256: str, target: Path) -> None:
        """Stream blob `sha256` to `target` (via a temp file), checking its hash."""
        import requests

        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}-{os.urandom(4).hex()}.part")
        digest = hashlib.sha256()
        try:
            with requests.get(
                f"{self.url}/api/blobs/{sha256}",
                headers=self._headers(),
                stream=True,
                timeout=TIMEOUT,
            ) as response:
                if response.status_code != 200:
                    raise UserError(self._problems("GET", f"/api/blobs/{sha256}", response))
                with tmp.open("wb") as out:
                    for block in response.iter_content(CHUNK):
                        digest.update(block)
                        out.write(block)
            if digest.hexdigest() != sha256:
                raise UserError(
                    problem(
                        f"{self.url}/api/blobs/{sha256}",
                        f"the bytes received hash to {digest.hexdigest()}",
                        "retry; if it persists the hub's storage is damaged",
                    )
                )
            os.replace(tmp, target)
        except requests.RequestException as exc:
            raise UserError(problem(self.url, f"download failed ({exc})", "retry")) from None
        finally:
            tmp.unlink(missing_ok=True)
