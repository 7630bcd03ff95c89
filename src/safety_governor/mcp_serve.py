"""The MCP server's entry: runs it from settings over stdio or streamable HTTP.

An entry point (``python -m safety_governor mcp``, ``mcp/reliability_framework_mcp_server.py``):
it builds the server through the composition root (``bootstrap.build_mcp_server``), which the
server module itself never imports.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping
from functools import partial
from typing import Any

from . import __version__
from .config import Settings
from .errors import ConfigError
from .mcp_server import DEFAULT_HOST, DEFAULT_PATH, DEFAULT_PORT, MIN_TOKEN_LENGTH, SERVER_NAME, TOKEN_ENV, log
from .redaction import RedactingFormatter


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def server_token(environ: Mapping[str, str]) -> str | None:
    """``MCP_SERVER_TOKEN`` (blank means unset). Raises ``ConfigError`` if it is too short."""
    token = (environ.get(TOKEN_ENV) or "").strip()
    if not token:
        return None
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"{TOKEN_ENV} is too short: use at least {MIN_TOKEN_LENGTH} characters")
    return token


def _configure_logging(level: str) -> None:
    """Everything to stderr (on stdio, stdout carries MCP messages only), credentials redacted:
    stderr often ends up in a file."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    log.setLevel(logging.INFO)


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def serve(
    settings: Settings,
    *,
    http: bool = False,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    path: str = DEFAULT_PATH,
    environ: Mapping[str, str],
    log_level: str = "warning",
) -> int:
    """Run the server until interrupted (stdio: until stdin closes). Returns an exit code.

    Exit codes: 0 after a clean stop (Ctrl-C, SIGTERM, stdin closed); 1 when the HTTP server fails
    during start-up after binding. Raises ``ConfigError`` (CLI exit 2) for a bad token, a
    non-loopback host without a token, a bad port or a port that cannot be bound (in use), before
    anything is announced.
    """
    token = server_token(environ) if http else None
    if http:
        if not 0 < port < 65536:
            raise ConfigError(f"--port must be 1-65535, got {port}")
        if not is_loopback(host) and token is None:
            raise ConfigError(
                f"refusing to listen on {host} without a token: set {TOKEN_ENV} or use --host 127.0.0.1"
            )
        if not path.startswith("/"):
            raise ConfigError(f"--path must start with '/', got {path!r}")
    _configure_logging(log_level)
    url_host = f"[{host}]" if ":" in host else host
    from .bootstrap import build_mcp_server

    # Bind before anything is built or announced: a busy port is one line (exit 2), never an "on
    # http://..." line followed by uvicorn's own error and its exit 3. uvicorn serves this socket.
    listener = _listen(host, port) if http else None
    try:
        server = build_mcp_server(settings, token=token, public_url=f"http://{url_host}:{port}" if http else None)
    except BaseException:
        if listener is not None:
            listener.close()
        raise
    try:
        if not http:
            log.info("MCP server %s %s on stdio (store %s)", SERVER_NAME, __version__,
                     "elasticsearch" if settings.elastic_url else "embedded")
            server.run("stdio")
            return 0
        import anyio
        import uvicorn

        # Plain JSON answers instead of an SSE stream per POST: every tool call is one request and
        # one response (no progress or log notifications), and the stream's framing, its task and
        # memory channels were the largest server-side cost of a call (bench/bench_mcp.py, README).
        # Clients must accept both forms (streamable HTTP); the SDK's, the Inspector and Kibana do.
        app = server.streamable_http_app(streamable_http_path=path, host=host, json_response=True)
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                log_level=log_level.lower(), lifespan="on")
        log.info("MCP server %s %s on http://%s:%d%s (%s)", SERVER_NAME, __version__, url_host, port, path,
                 "bearer token required" if token else "no token: loopback only")
        # uvicorn shuts down gracefully on SIGTERM, then re-raises it; make that an interrupt, so the
        # store is closed below instead of the process dying on the default handler.
        signal.signal(signal.SIGTERM, _interrupt)
        anyio.run(partial(uvicorn.Server(config).serve, sockets=[listener]))
        return 0
    except KeyboardInterrupt:
        return 0
    except SystemExit as exc:
        # uvicorn exits on a startup failure after logging it; report it as a failed run (exit 1).
        log.error("the HTTP server stopped during start-up (uvicorn exit %s)", exc.code)
        return 1
    finally:
        if listener is not None:
            listener.close()
        server.close()


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; ``ConfigError`` (exit 2) when it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, as asyncio's own sockets have: asyncio sets TCP_NODELAY only on such
    # sockets, and without it every small response waits ~40 ms on Nagle and a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
        return sock
    except OSError as exc:
        sock.close()
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        hint = ("another process is listening there: stop it or choose another --port"
                if exc.errno == errno.EADDRINUSE else "check --host and --port")
        raise ConfigError(f"cannot listen on {host}:{port}: {why.lower()}; {hint}") from None
