"""The `hub` verbs: run a hub server, manage tokens/keys/bases, publish, search, pull, verify.

Each verb is a few lines over `gemmaforge.hub.server` / `gemmaforge.hub.client`; those (and
FastAPI, SQLAlchemy, requests) are imported inside verbs so `--help` stays instant.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, get_origin

import typer
from rich.markup import escape

from gemmaforge import signing
from gemmaforge.cli.common import new_app
from gemmaforge.config_load import COMMAND_LINE
from gemmaforge.errors import UserError, problem
from gemmaforge.hub import bases
from gemmaforge.hub.client.api import HubClient, split_name
from gemmaforge.hub.client.config import save_login
from gemmaforge.hub.client.publish import publish as run_publish
from gemmaforge.hub.client.pull import pull as run_pull
from gemmaforge.hub.client.pull import verify_folder
from gemmaforge.hub.filters import Filters
from gemmaforge.hub.server import Settings
from gemmaforge.hub.web import serve as run

HELP = "Publish, find, pull and verify adapters on a gemmaforge hub (or run one)."

app = new_app(help=HELP)
token_app = new_app(help="API tokens (on the server machine).")
keys_app = new_app(help="Publisher signing keys registered on the hub.")
base_app = new_app(help="Base models registered on the hub.")
app.add_typer(token_app, name="token")
app.add_typer(keys_app, name="keys")
app.add_typer(base_app, name="base")

RootOpt = Annotated[Path, typer.Option(help="The hub's folder (database and blobs).")]
DbOpt = Annotated[
    str | None,
    typer.Option(
        help="Database URL (postgresql+psycopg://...); default SQLite in --root.",
        show_default=False,
    ),
]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--hub",
        envvar="GEMMAFORGE_HUB_URL",
        help="Hub URL (else the login file).",
        show_default=False,
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(envvar="GEMMAFORGE_HUB_TOKEN", help="API token.", show_default=False),
]
ModelOpt = Annotated[
    Path | None,
    typer.Option(
        help="A local base model to check the adapter's shapes against (no weights loaded).",
        show_default=False,
    ),
]


def _client(url: str | None, token: str | None):

    return HubClient(url, token)


def _storage_options(storage: str | None) -> dict:
    """S3 endpoint from AWS_ENDPOINT_URL (fsspec's s3fs reads credentials from the usual
    AWS variables itself)."""
    import os

    if storage and storage.startswith("s3://") and os.environ.get("AWS_ENDPOINT_URL"):
        return {"endpoint_url": os.environ["AWS_ENDPOINT_URL"]}
    return {}


@app.command()
def serve(
    root: RootOpt,
    db: DbOpt = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Blob store URL (s3://bucket/prefix); default ROOT/blobs.", show_default=False
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8700,
    private: Annotated[bool, typer.Option(help="Reads need a token too.")] = False,
    max_file_mb: Annotated[float, typer.Option(min=0.001, help="Largest file, in MiB.")] = 8192,
    orphan_minutes: Annotated[
        float, typer.Option(min=0, help="Delete unreferenced blobs older than this at start.")
    ] = 60,
    rate: Annotated[
        float, typer.Option(min=0.001, help="Requests per second per token (or address).")
    ] = 50.0,
    burst: Annotated[int, typer.Option(min=1, help="Requests allowed at once per token.")] = 500,
) -> None:
    """Run a hub server (FastAPI; SQLite or PostgreSQL; local or S3 blobs)."""

    settings = Settings(
        root=root,
        db_url=db,
        storage_url=storage,
        storage_options=_storage_options(storage),
        private=private,
        max_blob_bytes=int(max_file_mb * 2**20),
        orphan_minutes=orphan_minutes,
        rate_per_s=rate,
        rate_burst=burst,
    )
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: {host} is reachable by others; put TLS in front of it", err=True)
    typer.echo(f"Hub at http://{host}:{port} (root {root})", err=True)
    run(settings, host, port)


@token_app.command("create")
def token_create(namespace: str, root: RootOpt, db: DbOpt = None) -> None:
    """Create an API token for NAMESPACE (shown once; the hub stores only its hash)."""
    from gemmaforge.hub.server.auth import NAMESPACE, create_token
    from gemmaforge.hub.server.db import open_database

    if not NAMESPACE.match(namespace):
        raise UserError(
            problem(
                COMMAND_LINE,
                f"{namespace!r} is not a namespace name",
                "use lowercase letters, digits, '-', '_' or '.'",
            )
        )
    settings = Settings(root=root, db_url=db)
    settings.root.mkdir(parents=True, exist_ok=True)
    _, sessions = open_database(settings.database_url)
    with sessions() as session:
        token = create_token(session, namespace)
    typer.echo(f"Token for namespace {namespace} (shown once; store it safely):")
    typer.echo(token)


@app.command()
def keygen(
    folder: Annotated[Path, typer.Argument(help="Folder for private.pem and public.pem.")],
) -> None:
    """Make a signing key pair (EC P-256): FOLDER/private.pem, FOLDER/public.pem."""

    private, public = signing.keygen(folder)
    typer.echo(f"Wrote {private} (keep it secret) and {public} (register it: hub keys add)")


@keys_app.command("add")
def keys_add(public_key: Path, hub: UrlOpt = None, token: TokenOpt = None) -> None:
    """Register PUBLIC_KEY for the token's namespace (the first key is pinned)."""
    if not public_key.is_file():
        raise UserError(problem(str(public_key), "no such file", "pass the public.pem of keygen"))
    result = _client(hub, token).add_key(public_key.read_text())
    typer.echo(f"Key {result['fingerprint']} registered (pinned) for {result['namespace']}")


@app.command()
def login(
    url: str,
    token: Annotated[str, typer.Option(help="An API token from `hub token create`.")],
) -> None:
    """Remember URL and TOKEN for the hub verbs (a file readable by you only)."""

    client = _client(url, token)
    client.health()
    typer.echo(f"Logged in to {client.url}; saved to {save_login(url, token)}")


@base_app.command("add")
def base_add(
    model: Annotated[Path, typer.Argument(help="Local base model folder or .gguf file.")],
    id: Annotated[str, typer.Option(help="Canonical id, e.g. google/gemma-4-E2B-it.")],
    revision: Annotated[str, typer.Option(help="The revision (commit) of that id.")],
    licence: Annotated[str, typer.Option(help="The base's licence.")] = "gemma",
    hub: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Register a base model: its weight shapes (from headers), tokenizer and template hashes."""

    record = bases.read_base(model, id, revision, licence)
    data = record.to_json()
    _client(hub, token).add_base(json.loads(data) if isinstance(data, str) else data)
    typer.echo(f"Registered base {id}@{revision} ({len(record.shapes)} weights)")


@app.command()
def publish(
    run: Annotated[Path, typer.Argument(help="A finished run folder.")],
    name: Annotated[str, typer.Option(help="NAMESPACE/NAME on the hub.")],
    version: Annotated[str, typer.Option(help="Version name, e.g. v1 (immutable).")],
    key: Annotated[Path, typer.Option(help="Your private.pem (from hub keygen).")],
    licence: Annotated[str, typer.Option(help="Licence of the adapter, e.g. apache-2.0.")],
    domain: Annotated[str | None, typer.Option(help="Domain tag.", show_default=False)] = None,
    base: Annotated[
        str | None,
        typer.Option(
            help="ID@REV of a registered base (default: matched by weight hashes).",
            show_default=False,
        ),
    ] = None,
    hf_card: Annotated[bool, typer.Option(help="Write Hugging Face card metadata.")] = False,
    hub: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Check, sign and upload a run's adapter, card and provenance (never its data)."""

    done = run_publish(_client(hub, token), run, name, version, key, licence, domain, base, hf_card)
    typer.echo(
        f"Published {done.name}@{done.version} (digest {done.digest[:16]}, base {done.base}, "
        f"modalities {', '.join(done.modalities) or 'none'})"
    )


def with_filter_options(verb: Callable[..., Any]) -> Callable[..., Any]:
    """Give `verb` one option per search filter (each field of `Filters` but `q`, which is
    the verb's QUERY argument), help text from the field; it receives the given ones as
    `filters`. Built from the one definition, so the CLI cannot fall behind the server."""
    signature = inspect.signature(verb, eval_str=True)
    names = [name for name in Filters.model_fields if name != "q"]
    options = []
    for name in names:
        info = Filters.model_fields[name]
        kind = info.annotation
        default = info.default if kind is str else None  # `sort`: the one with a default
        if get_origin(kind) is list:
            kind = list[str] | None
        option = typer.Option(
            default, f"--{name}", help=escape(info.description or ""), show_default=bool(default)
        )
        options.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
        )

    @functools.wraps(verb)
    def run(**kwargs: Any) -> Any:
        filters = {name: kwargs.pop(name) for name in names}
        return verb(**kwargs, filters={k: v for k, v in filters.items() if v is not None})

    params = [p for p in signature.parameters.values() if p.name != "filters"]
    run.__signature__ = signature.replace(parameters=[*params, *options])  # type: ignore[attr-defined]
    return run


@app.command()
@with_filter_options
def search(
    query: Annotated[str | None, typer.Argument(help="Words in name, card or tags.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    hub: UrlOpt = None,
    token: TokenOpt = None,
    filters: dict | None = None,
) -> None:
    """Search the hub's adapters (newest version of each that is not yanked)."""
    results = _client(hub, token).search(query, limit, **(filters or {}))
    if as_json:
        typer.echo(json.dumps(results, indent=2))
        return
    if not results:
        typer.echo("No adapters found.")
    for r in results:
        typer.echo(
            f"{r['name']}@{r['version']}  base {r['base']}  [{', '.join(r['modalities'])}]  "
            f"{r['licence']}  pulls {r['pulls']}"
        )


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="NAMESPACE/NAME[@VERSION].")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    hub: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Show an adapter's versions, or one version's files, base, provenance and evals."""

    client = _client(hub, token)
    namespace, name, version = split_name(ref)
    data = client.version(namespace, name, version) if version else client.adapter(namespace, name)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    if not version:
        typer.echo(f"{data['name']}  tags: {data['tags']}")
        for v in data["versions"]:
            yanked = f"  YANKED: {v['yank_reason']}" if v["yanked"] else ""
            typer.echo(f"  {v['version']}  {v['digest'][:16]}  {v['created_at']}{yanked}")
        return
    typer.echo(f"{data['name']}@{data['version']}  digest {data['digest']}")
    typer.echo(f"  base {data['base']['id']}@{data['base']['revision']}  licence {data['licence']}")
    typer.echo(f"  modalities {', '.join(data['modalities'])}  signed by {data['key_fingerprint']}")
    if data["yanked"]:
        typer.echo(f"  YANKED: {data['yank_reason']}")
    for f in data["files"]:
        typer.echo(f"  {f['size']:>12}  {f['sha256'][:16]}  {f['path']}")
    for e in data["eval_reports"]:
        typer.echo(
            f"  eval (self-reported) on set {e['eval_set_sha256'][:16]}: "
            f"{json.dumps(e['report'].get('metrics', {}))[:200]}"
        )


@app.command()
def pull(
    ref: Annotated[str, typer.Argument(help="NAMESPACE/NAME[@VERSION] (default latest).")],
    to: Annotated[Path, typer.Option(help="A new or empty folder to put it in.")],
    model: ModelOpt = None,
    hub: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Download, verify (hashes, signature, and with --model shapes), then place at --to."""

    pulled = run_pull(_client(hub, token), ref, to, model)
    for warning in pulled.warnings:
        typer.echo(f"warning: {warning}", err=True)
    info = pulled.info
    typer.echo(f"Pulled {info['name']}@{info['version']} to {pulled.folder} (verified)")


@app.command()
def verify(
    folder: Path,
    model: ModelOpt = None,
    key: Annotated[
        Path | None,
        typer.Option(
            help="Publisher public key (default: the one recorded at pull).", show_default=False
        ),
    ] = None,
) -> None:
    """Check a pulled folder again: signature, file rules and, with --model, shapes."""

    origin = verify_folder(folder, model, key)
    what = f"{origin['name']}@{origin['version']}" if "name" in origin else origin["digest"][:16]
    typer.echo(f"{folder}: OK ({what})")


@app.command()
def yank(
    ref: Annotated[str, typer.Argument(help="NAMESPACE/NAME@VERSION.")],
    reason: Annotated[str, typer.Option(help="Why (shown to everyone who pulls it).")],
    hub: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Mark a version yanked: search and `latest` skip it; pulling it warns."""

    namespace, name, version = split_name(ref)
    if not version:
        raise UserError(problem(COMMAND_LINE, f"{ref} names no version", "pass NS/NAME@VERSION"))
    _client(hub, token).yank(namespace, name, version, reason)
    typer.echo(f"Yanked {namespace}/{name}@{version}")


admin_app = new_app(help="Server-side moderation (on the server machine: reads --root).")
app.add_typer(admin_app, name="admin")


def _admin_sessions(root: Path, db: str | None):
    from gemmaforge.hub.server.db import open_database

    settings = Settings(root=root, db_url=db)
    if db is None and not (settings.root / "hub.sqlite").is_file():
        raise UserError(problem(str(root), "holds no hub database", "pass the hub's --root"))
    return open_database(settings.database_url)[1]


@admin_app.command("reports")
def admin_reports(
    root: RootOpt,
    db: DbOpt = None,
    all_reports: Annotated[bool, typer.Option("--all", help="Also closed reports.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List reports people filed against adapters (open ones unless --all)."""
    from gemmaforge.hub.server.community import open_reports

    with _admin_sessions(root, db)() as session:
        rows = open_reports(session, everything=all_reports)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("No open reports.")
    for r in rows:
        typer.echo(f"#{r['id']}  {r['adapter']}  [{r['status']}]  by {r['reporter'] or '?'}")
        typer.echo(f"    {r['reason']}")


@admin_app.command("yank")
def admin_yank(
    ref: Annotated[str, typer.Argument(help="NAMESPACE/NAME@VERSION.")],
    reason: Annotated[str, typer.Option(help="Why (shown to everyone who pulls it).")],
    root: RootOpt,
    db: DbOpt = None,
    report: Annotated[
        int | None, typer.Option(help="The report this acts on (closed).", show_default=False)
    ] = None,
) -> None:
    """Yank any namespace's version (an admin on the server machine)."""
    from gemmaforge.hub.server.app import HubError, _point_latest, resolve
    from gemmaforge.hub.server.community import yank as do_yank

    namespace, name, version = split_name(ref)
    if not version:
        raise UserError(problem(COMMAND_LINE, f"{ref} names no version", "pass NS/NAME@VERSION"))
    with _admin_sessions(root, db)() as session:
        try:
            row = resolve(session, namespace, name, version)
        except HubError as exc:
            raise UserError(problem(COMMAND_LINE, str(exc.detail), "check the name")) from None
        do_yank(session, row, reason, report)
        _point_latest(session, row.adapter_id)
        session.commit()
    typer.echo(f"Yanked {namespace}/{name}@{version}")
