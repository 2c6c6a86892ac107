"""OpenAI-compatible HTTP server for the native engine (docs/server.md).

``create_app(engine)`` builds the FastAPI app; ``ServerThread`` runs it on loopback in-process;
``loopcoder serve`` (scenarios/serve_cli.py) runs it in the foreground.
"""
from .embedded import ServerThread, bind_socket, serve_forever
from .server import create_app

__all__ = ["ServerThread", "bind_socket", "create_app", "serve_forever"]
