"""OpenAI-compatible HTTP server for the native engine (docs/server.md).

``create_app(engine)`` builds the FastAPI app; ``ServerThread`` runs it on loopback in-process;
``loopcoder serve`` (scenarios/serve_cli.py) runs it in the foreground.

The names are imported on first use: the request models and errors (``api.errors``, ``api.protocol``)
are also used where no web server is installed (training on the GPU host reads them without FastAPI).
"""
from importlib import import_module

_EXPORTS = {"ServerThread": ".embedded", "bind_socket": ".embedded", "serve_forever": ".embedded",
            "create_app": ".server"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)
