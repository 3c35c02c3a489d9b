"""The hub's pages, with URLs as on the Hugging Face Hub:

- `/` home: newest, most pulled, adapters by domain;
- `/search?q=...&base=...` search with facets (the JSON API's filters);
- `/NS` a publisher's adapters; `/NS/NAME` an adapter at `latest`; `/NS/NAME/tree/V` a
  version: card, files, versions, evaluation, loss curve, fits, signature, provenance,
  ratings, and the commands to pull and serve it;
- `/-/login` (a token pasted once, kept in an HttpOnly SameSite=Strict cookie), `/-/logout`,
  and the rating and report forms (POST, same-origin checked: a form on another site
  cannot post with the visitor's cookie).

Pages read the database through the server's own functions, so they show what the API says.
"""

# No `from __future__ import annotations`: FastAPI must see the dependency types (DB, User,
# Fields) that add_pages defines locally.

import functools
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import select

from gemmaforge.hub.filters import SORTS, Filters
from gemmaforge.hub.server import auth, community
from gemmaforge.hub.server.app import (
    LATEST,
    HubError,
    SearchQuery,
    find_adapter,
    resolve,
    version_json,
)
from gemmaforge.hub.server.db import Adapter, Namespace, Version
from gemmaforge.hub.server.search import facets, search
from gemmaforge.hub.web.render import card_html, loss_svg

HERE = Path(__file__).parent
COOKIE = "gemmaforge_hub_token"
RESERVED = {"search", "api", "-"}


@functools.lru_cache(maxsize=1)
def templates():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        auto_reload=False,
    )
    env.filters["size"] = _size
    return env


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def page(request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
    context.setdefault("user", getattr(request.state, "user", None))
    context["hub_url"] = str(request.base_url).rstrip("/")
    html = templates().get_template(template).render(request=request, **context)
    return HTMLResponse(html, status_code=status)


async def form_fields(request: Request) -> dict[str, str]:
    """A posted form's fields (`application/x-www-form-urlencoded`, what our forms send),
    parsed with the standard library: no multipart parser is needed for a few text fields.
    The app's body cap bounds its size."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise HubError(415, "forms are posted as application/x-www-form-urlencoded")
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


Fields = Annotated[dict, Depends(form_fields)]


def field(fields: dict, name: str, most: int, least: int = 0) -> str:
    value = fields.get(name, "")
    if not least <= len(value) <= most:
        raise HubError(422, f"{name} must be {least} to {most} characters")
    return value


def same_origin(request: Request) -> bool:
    """A POST from one of our own pages: its Origin (or Referer) is this host."""
    source = request.headers.get("origin") or request.headers.get("referer") or ""
    if not source or source == "null":
        return False
    return urlsplit(source).netloc == request.headers.get("host", "")


def add_pages(app: FastAPI) -> None:
    hub = app.state.hub
    app.mount("/-/static", StaticFiles(directory=HERE / "static"), name="hub-static")

    def db():
        with hub.sessions() as session:
            yield session

    DB = Annotated[object, Depends(db)]

    def visitor(request: Request, session: DB) -> str | None:
        """The namespace of the visitor's login cookie (None: anonymous)."""
        token = request.cookies.get(COOKIE)
        ns = auth.token_namespace(session, token) if token else None
        request.state.user = ns.name if ns else None
        if hub.settings.private and ns is None and request.url.path != "/-/login":
            raise HubError(401, "this hub is private: log in at /-/login with a token")
        return request.state.user

    User = Annotated[str | None, Depends(visitor)]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home(request: Request, user: User, session: DB):
        return page(
            request,
            "home.html",
            newest=search(session, Filters(sort="recent"), 10),
            popular=search(session, Filters(sort="pulls"), 10),
            domains=facets(session, Filters())["domain"],
        )

    @app.get("/search", response_class=HTMLResponse, include_in_schema=False)
    def search_page(
        request: Request,
        user: User,
        session: DB,
        filters: SearchQuery,
        page_no: Annotated[int, Query(alias="page", ge=1, le=500)] = 1,
    ):
        results = search(session, filters, 20, (page_no - 1) * 20)
        asked = {k: v for k, v in request.query_params.multi_items() if v and k != "page"}

        def link(**change):
            params = [(k, v) for k, v in asked.items() if k not in change]
            params += [(k, v) for k, v in change.items() if v is not None]
            return "/search?" + urlencode(params)

        return page(
            request,
            "search.html",
            filters=filters,
            results=results,
            facets=facets(session, filters),
            sorts=SORTS,
            link=link,
            page_no=page_no,
        )

    @app.get("/-/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(request: Request, user: User):
        return page(request, "login.html")

    @app.post("/-/login", include_in_schema=False)
    def login(request: Request, session: DB, fields: Fields):
        if not same_origin(request):
            raise HubError(403, "cross-site form posts are refused")
        token = field(fields, "token", 200).strip()
        ns = auth.token_namespace(session, token) if token else None
        if ns is None:
            request.state.user = None
            return page(request, "login.html", status=401, error="That token is not valid here.")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", max_age=30 * 86400)
        return response

    @app.post("/-/logout", include_in_schema=False)
    def logout(request: Request):
        if not same_origin(request):
            raise HubError(403, "cross-site form posts are refused")
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @app.get("/{namespace}", response_class=HTMLResponse, include_in_schema=False)
    def publisher(namespace: str, request: Request, user: User, session: DB):
        ns = (
            None
            if namespace in RESERVED
            else session.scalar(select(Namespace).where(Namespace.name == namespace))
        )
        if ns is None:
            raise HubError(404, f"no publisher {namespace} on this hub")
        adapters = search(session, Filters(namespace=namespace, sort="recent"), 100)
        return page(request, "publisher.html", namespace=namespace, adapters=adapters)

    @app.get("/{namespace}/{name}", response_class=HTMLResponse, include_in_schema=False)
    def adapter_page(namespace: str, name: str, request: Request, user: User, session: DB):
        return version_page(request, session, namespace, name, None)

    @app.get("/{namespace}/{name}/tree/{ref}", response_class=HTMLResponse, include_in_schema=False)
    def tree_page(namespace: str, name: str, ref: str, request: Request, user: User, session: DB):
        return version_page(request, session, namespace, name, ref)

    @app.post("/{namespace}/{name}/tree/{ref}/rate", include_in_schema=False)
    def rate_form(
        namespace: str,
        name: str,
        ref: str,
        request: Request,
        user: User,
        session: DB,
        fields: Fields,
    ):
        version = _form_target(request, user, session, namespace, name, ref)
        stars = field(fields, "stars", 1, 1)
        if stars not in "12345":
            raise HubError(422, "stars must be 1 to 5")
        review = field(fields, "review", community.MAX_REVIEW)
        try:
            community.rate(session, version, user, int(stars), review)
        except community.CommunityError as exc:
            raise HubError(exc.status, str(exc)) from None
        session.commit()
        return RedirectResponse(f"/{namespace}/{name}/tree/{ref}#ratings", status_code=303)

    @app.post("/{namespace}/{name}/tree/{ref}/report", include_in_schema=False)
    def report_form(
        namespace: str,
        name: str,
        ref: str,
        request: Request,
        user: User,
        session: DB,
        fields: Fields,
    ):
        version = _form_target(request, user, session, namespace, name, ref)
        reason = field(fields, "reason", community.MAX_REASON, 1)
        try:
            community.report(session, version, user, reason)
        except community.CommunityError as exc:
            raise HubError(exc.status, str(exc)) from None
        session.commit()
        return RedirectResponse(f"/{namespace}/{name}/tree/{ref}?reported=1", status_code=303)

    _html_errors(app)


def _form_target(request, user, session, namespace, name, ref) -> Version:
    if not same_origin(request):
        raise HubError(403, "cross-site form posts are refused")
    if user is None:
        raise HubError(401, "log in with a token first (/-/login)")
    return resolve(session, namespace, name, ref)


def version_page(request: Request, session, namespace: str, name: str, ref: str | None):
    if namespace in RESERVED:
        raise HubError(404, f"no adapter {namespace}/{name} on this hub")
    adapter = find_adapter(session, namespace, name)
    try:
        version = resolve(session, namespace, name, ref or LATEST)
    except HubError:
        if ref is not None:
            raise
        # Every version yanked: show the newest, marked yanked.
        version = session.scalar(
            select(Version).where(Version.adapter_id == adapter.id).order_by(Version.id.desc())
        )
    data = version_json(session, version)
    versions = session.scalars(
        select(Version).where(Version.adapter_id == adapter.id).order_by(Version.id.desc())
    ).all()
    provenance = data["provenance"] or {}
    publisher = session.get(Namespace, session.get(Adapter, version.adapter_id).namespace_id)
    return page(
        request,
        "adapter.html",
        a=data,
        namespace=publisher.name,
        name=name,
        versions=versions,
        card=card_html(data["card"]),
        loss=loss_svg(provenance.get("metrics") or []),
        data_report=provenance.get("data_report") or {},
        data_files=_data_files(provenance.get("data_report")),
        manifest=provenance.get("manifest") or {},
        config=provenance.get("config") or {},
        evals=[_eval_rows(e) for e in data["eval_reports"]],
        mine=next((r for r in data["ratings"] if r["user"] == request.state.user), None),
        reported=request.query_params.get("reported") == "1",
    )


def _data_files(report) -> list[dict]:
    """The data report's files: base name only (the publisher's local paths are theirs),
    row count, format and content hash."""
    files = report.get("files") if isinstance(report, dict) else None
    rows = []
    for f in files if isinstance(files, list) else []:
        if isinstance(f, dict):
            rows.append(
                {
                    "name": str(f.get("path", "")).replace("\\", "/").rsplit("/", 1)[-1],
                    "rows": f.get("rows"),
                    "format": f.get("format") or "",
                    "fingerprint": str(f.get("fingerprint", "")),
                }
            )
    return rows


def _eval_rows(entry: dict) -> dict:
    """An eval report as table rows (metric, base, adapter) whatever its shape."""
    report = entry["report"] if isinstance(entry.get("report"), dict) else {}
    metrics = report.get("metrics") if isinstance(report.get("metrics"), dict) else {}
    rows = []
    if isinstance(metrics.get("adapter"), dict):
        base = metrics.get("base") if isinstance(metrics.get("base"), dict) else {}
        for key, value in metrics["adapter"].items():
            rows.append((key, base.get(key), value))
    else:
        rows = [(k, None, v) for k, v in metrics.items()]
    return {
        "set": entry["eval_set_sha256"],
        "rows": [(k, b, v) for k, b, v in rows if isinstance(v, int | float)],
        "examples": report.get("examples_scored"),
        "task": report.get("task"),
    }


def _html_errors(app: FastAPI) -> None:
    """Errors on page URLs answer as pages; the API keeps its JSON errors."""
    from starlette.exceptions import HTTPException

    json_handler = app.exception_handlers[HTTPException]

    async def handler(request: Request, exc: HTTPException):
        wants_page = not request.url.path.startswith(
            "/api/"
        ) and "text/html" in request.headers.get("accept", "")
        if not wants_page:
            return await json_handler(request, exc)
        request.state.user = getattr(request.state, "user", None)
        return page(request, "error.html", status=exc.status_code, message=str(exc.detail))

    app.exception_handlers[HTTPException] = handler
