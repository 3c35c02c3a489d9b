"""The dashboard's web app (FastAPI) and how it is served: in the foreground
(`gemmaforge dashboard`) or in a background thread of a training process (`train --dashboard`).

Pages are rendered on the server (Jinja2 templates shipped in the package). The browser opens
one server-sent-events stream (`/events`); whenever a run folder's files change the server sends
the re-rendered live part of the page, which a few lines of inline script swap in. It binds to
127.0.0.1 only: the page shows prompts and replies from private data.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gemmaforge.dashboard.read import charts, config_rows, duration, load_runs, signature

HOST = "127.0.0.1"
DEFAULT_PORT = 8760
POLL_SECONDS = 1.0
"""How often the event stream looks at the run folders' files (a few stat calls)."""
REFRESH_SECONDS = 30.0
"""The live part is re-sent at least this often (the shown status ages: training -> stopped)."""


def _templates():
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("gemmaforge.dashboard", "templates"),
        autoescape=select_autoescape(["html", "jinja"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )

    env.filters["duration"] = duration
    env.filters["num"] = _num
    return env


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def create_app(roots: list[Path], poll_seconds: float = POLL_SECONDS):
    """The FastAPI app showing the run folders `roots` (side by side when several)."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse

    roots = [Path(root) for root in roots]
    env = _templates()
    app = FastAPI(title="gemmaforge dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.stopping = False

    def live_html() -> str:
        runs = load_runs(roots)
        keys, values = config_rows(runs)
        media = []
        for run in runs:
            for sample in run.latest_samples:
                sample["media_urls"] = []
                for item in sample.get("media") or []:
                    # Only local files the run itself named are served (by index, never by path).
                    if Path(item["ref"]).is_file():
                        sample["media_urls"].append((item["kind"], f"media/{len(media)}"))
                        media.append(item["ref"])
        app.state.media = media
        return env.get_template("live.html.jinja").render(
            runs=runs, charts=charts(runs), keys=keys, values=values
        )

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return env.get_template("page.html.jinja").render(
            live=live_html(), names=[root.name for root in roots]
        )

    @app.get("/live", response_class=HTMLResponse)
    def live() -> str:
        return live_html()

    @app.get("/media/{index}")
    def media(index: int):
        files = getattr(app.state, "media", [])
        if not 0 <= index < len(files):
            raise HTTPException(404)
        return FileResponse(files[index])

    @app.get("/events")
    async def events():
        async def stream():
            seen, waited = None, 0.0
            while not app.state.stopping:
                # In the server's own thread (a few stat calls; a render is ~10 ms even for a
                # long run): all of the dashboard's work stays on one thread, which
                # tools/dashboard_overhead.py measures.
                now = signature(roots)
                if now != seen or waited >= REFRESH_SECONDS:
                    seen, waited = now, 0.0
                    html = live_html()
                    yield "".join(f"data: {line}\n" for line in html.splitlines()) + "\n"
                await asyncio.sleep(poll_seconds)
                waited += poll_seconds

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    return app


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:`port`; if that port is taken, any free one."""
    for candidate in (port, 0) if port else (0,):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, candidate))
        except OSError:
            sock.close()
            continue
        sock.listen(64)
        return sock
    raise OSError(f"no free port on {HOST}")


@dataclass
class Running:
    """A dashboard served from a background thread."""

    url: str
    server: Any
    thread: threading.Thread
    app: Any

    def stop(self) -> None:
        self.app.state.stopping = True
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _server(app, sock: socket.socket):
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    return uvicorn.Server(config)


def url_of(sock: socket.socket) -> str:
    return f"http://{HOST}:{sock.getsockname()[1]}/"


def serve(roots: list[Path], port: int = DEFAULT_PORT, on_ready=None) -> None:
    """Serve in the foreground until Ctrl-C; `on_ready(url)` is called once it listens."""
    sock = bind(port)
    app = create_app(roots)
    server = _server(app, sock)
    if on_ready:
        on_ready(url_of(sock))
    try:
        server.run(sockets=[sock])
    finally:
        app.state.stopping = True


def start(
    roots: list[Path], port: int = DEFAULT_PORT, poll_seconds: float = POLL_SECONDS
) -> Running:
    """Serve from a daemon thread (it ends with the process); returns once it accepts."""
    sock = bind(port)
    app = create_app(roots, poll_seconds)
    server = _server(app, sock)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="gemmaforge-dashboard", daemon=True
    )
    thread.start()
    for _ in range(200):
        if server.started:
            break
        threading.Event().wait(0.05)
    return Running(url_of(sock), server, thread, app)
