"""The hub's web pages (faces layer): server-rendered Jinja2 pages on the hub's own app.

    app = create_site(Settings(root=...))    # the API plus the pages
    serve(settings, host, port)              # what `gemmaforge hub serve` runs

The server app (a layer below) never imports this package: `create_site` passes `add_web`
to `create_app` as an extension.
"""

from __future__ import annotations

__all__ = ["add_web", "create_site", "serve"]


def add_web(app) -> None:
    from gemmaforge.hub.web.pages import add_pages

    add_pages(app)


def create_site(settings):
    from gemmaforge.hub.server.app import create_app

    return create_app(settings, extensions=[add_web])


def serve(settings, host: str = "127.0.0.1", port: int = 8700) -> None:
    import uvicorn

    uvicorn.run(create_site(settings), host=host, port=port, log_level="warning")
