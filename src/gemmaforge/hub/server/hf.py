"""The read side of the Hugging Face Hub HTTP API, so `huggingface_hub` clients pull from us:

    snapshot_download(repo_id="ns/name", revision="v1", endpoint="http://127.0.0.1:8700")
    hf_hub_download("ns/name", "adapter_config.json", revision="v1", endpoint=...)

What `huggingface_hub` (2.x) calls, and what it needs back:
- `GET /api/models/{repo}` and `/api/models/{repo}/revision/{rev}`: JSON with `id`, `sha`
  (a 40-hex commit id: the first 40 hex digits of the version digest), `siblings`
  (`rfilename`, `size`), card data;
- `GET /api/models/{repo}/tree/{rev}[/{path}]`: a list of `{type, path, size, oid, lfs}`
  (one page: an adapter has far fewer files than a page holds);
- `HEAD`/`GET /{repo}/resolve/{rev}/{path}`: the bytes, with `X-Repo-Commit`, `ETag`
  (the file's sha256, as the Hub sends for LFS files), `X-Linked-Etag`, `X-Linked-Size`,
  `Content-Length`, and `Range` support for resumed downloads. 404s carry `X-Error-Code`
  (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) so the client raises the right error.

A revision is a version (`v1`), a tag (`latest`, or `main` for it), or a commit id.
"""

# No `from __future__ import annotations` here: FastAPI resolves the dependency types
# (Reader, DB) that create_app defines locally, which string annotations would hide.

import re

from fastapi import FastAPI, Request
from fastapi.responses import Response
from sqlalchemy import select

from gemmaforge.hub.server.db import File

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def add_hf_routes(app: FastAPI, hub, Reader, DB) -> None:
    from gemmaforge.hub.server.app import HubError, blob_response, resolve, version_json

    def info(namespace, name, rev, session, request) -> dict:
        version = resolve(session, namespace, name, rev)
        data = version_json(session, version)
        commit = version.digest[:40]
        return {
            "_id": commit,
            "id": f"{namespace}/{name}",
            "modelId": f"{namespace}/{name}",
            "author": namespace,
            "sha": commit,
            "lastModified": data["created_at"],
            "createdAt": data["created_at"],
            "private": hub.settings.private,
            "gated": False,
            "disabled": False,
            "downloads": version.pulls,
            "likes": 0,
            "library_name": "peft",
            "tags": ["peft", "lora", "gemmaforge", *data["modalities"]],
            "cardData": {
                "base_model": data["base"]["id"],
                "base_model_relation": "adapter",
                "library_name": "peft",
                "license": data["licence"],
            },
            "siblings": [{"rfilename": f["path"], "size": f["size"]} for f in data["files"]],
            "gemmaforge": {
                "version": version.version,
                "digest": version.digest,
                "yanked": version.yanked,
                "yank_reason": version.yank_reason,
            },
        }

    @app.get("/api/models/{namespace}/{name}")
    def model_info(namespace: str, name: str, who: Reader, session: DB, request: Request) -> dict:
        return info(namespace, name, "latest", session, request)

    @app.get("/api/models/{namespace}/{name}/revision/{rev}")
    def model_revision(
        namespace: str, name: str, rev: str, who: Reader, session: DB, request: Request
    ) -> dict:
        return info(namespace, name, rev, session, request)

    def tree(namespace, name, rev, path, session) -> list[dict]:
        version = resolve(session, namespace, name, rev)
        files = session.scalars(
            select(File).where(File.version_id == version.id).order_by(File.path)
        ).all()
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        entries, folders = [], set()
        for f in files:
            if not f.path.startswith(prefix):
                continue
            entries.append(
                {
                    "type": "file",
                    "path": f.path,
                    "size": f.size,
                    "oid": f.sha256[:40],
                    "lfs": {"oid": f.sha256, "size": f.size, "pointerSize": 134},
                }
            )
            parts = f.path[len(prefix) :].split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                folders.add(prefix + "/".join(parts[:depth]))
        entries += [{"type": "directory", "path": d, "oid": "0" * 40, "size": 0} for d in folders]
        return sorted(entries, key=lambda e: e["path"])

    @app.get("/api/models/{namespace}/{name}/tree/{rev}")
    def model_tree(namespace: str, name: str, rev: str, who: Reader, session: DB) -> list[dict]:
        return tree(namespace, name, rev, "", session)

    @app.get("/api/models/{namespace}/{name}/tree/{rev}/{path:path}")
    def model_tree_path(
        namespace: str, name: str, rev: str, path: str, who: Reader, session: DB
    ) -> list[dict]:
        return tree(namespace, name, rev, path, session)

    @app.get("/{namespace}/{name}/resolve/{rev}/{path:path}")
    @app.head("/{namespace}/{name}/resolve/{rev}/{path:path}", operation_id="head_resolve_file")
    def resolve_file(
        namespace: str, name: str, rev: str, path: str, who: Reader, session: DB, request: Request
    ) -> Response:
        version = resolve(session, namespace, name, rev)
        commit = version.digest[:40]
        row = session.scalar(select(File).where(File.version_id == version.id, File.path == path))
        if row is None:
            raise HubError(
                404,
                f"{namespace}/{name}@{version.version} has no file {path!r}",
                code="entry",
                headers={"X-Repo-Commit": commit, "X-Error-Code": "EntryNotFound"},
            )
        headers = {
            "X-Repo-Commit": commit,
            "X-Linked-Etag": f'"{row.sha256}"',
            "X-Linked-Size": str(row.size),
            "Accept-Ranges": "bytes",
        }
        head = request.method == "HEAD"
        if not head and path == "adapter_config.json":
            from gemmaforge.hub.server.community import count_pull

            count_pull(session, version)
            session.commit()
        wanted = RANGE.match(request.headers.get("range", ""))
        if wanted and not head and (wanted.group(1) or wanted.group(2)):
            start, end = _byte_range(wanted, row.size)
            if start >= row.size or start > end:
                return Response(status_code=416, headers={"Content-Range": f"bytes */{row.size}"})
            from fastapi.responses import StreamingResponse

            return StreamingResponse(
                hub.store.open(row.sha256, start, end + 1),
                status_code=206,
                media_type="application/octet-stream",
                headers={
                    **headers,
                    "ETag": f'"{row.sha256}"',
                    "Content-Length": str(end + 1 - start),
                    "Content-Range": f"bytes {start}-{end}/{row.size}",
                },
            )
        return blob_response(hub, row.sha256, headers, head=head)


def _byte_range(match: re.Match, size: int) -> tuple[int, int]:
    first, last = match.group(1), match.group(2)
    if first == "":  # the last N bytes
        return max(0, size - int(last)), size - 1
    return int(first), min(size - 1, int(last)) if last else size - 1
