"""The hub server (apps layer): `create_app(Settings(...))` and `serve(settings, host, port)`."""

from __future__ import annotations

from gemmaforge.hub.server.settings import Settings

__all__ = ["Settings", "create_app", "serve"]


def create_app(settings: Settings):
    from gemmaforge.hub.server.app import create_app as build

    return build(settings)


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8700) -> None:
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
