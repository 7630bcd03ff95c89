"""``MCPToolPort``: the ``ToolPort`` over an MCP client session (the SDK's own ``mcp.Client``).

The port is sync-facing, like the rest of the pipeline: one background thread runs an asyncio
event loop that owns the client session, and ``call`` blocks on a future. Three ways in:

* ``MCPToolPort.in_process(server)``: a client on the same ``MCPServer`` object (fast mode);
* ``MCPToolPort.stdio(command, args, env=…)``: the server as a subprocess on stdin/stdout;
* ``MCPToolPort.http(url, token=…)``: streamable HTTP, with a bearer token when the server wants one.

Every call lands in the ``tool_trace`` audit stream with the tool, its arguments, the ids it
returned, its duration and the transport. Failures raise ``ToolCallError`` with a message safe to
show an agent; transport details stay in the log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

from .errors import ToolCallError
from .ports import AuditSink, ToolCall
from .tools import ToolTrace

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
CONNECT_TIMEOUT = 30.0

# Builds the ``mcp.Client`` inside the session task; the exit stack owns whatever it opens.
ClientFactory = Callable[[AsyncExitStack], Any]


class MCPToolPort:
    """Calls the governor's tools through an MCP client session.

    Args:
        factory: builds the ``mcp.Client`` (not yet entered) on the port's event loop.
        transport: the name recorded in the tool trace (``mcp-inprocess``, ``mcp-stdio``, ``mcp-http``).
        audit: where ``tool_trace`` records go (none: kept in ``calls`` only).
        timeout: seconds to wait for one tool call.

    Use as a context manager or call ``close()``. The session opens in the constructor, so a
    server that cannot be reached fails there (``ToolCallError``), not at the first call.
    """

    def __init__(
        self,
        factory: ClientFactory,
        *,
        transport: str,
        audit: AuditSink | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.transport = transport
        self.timeout = timeout
        self.trace = ToolTrace(transport, audit)
        self._factory = factory
        self._client: Any = None
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._main: asyncio.Task[None] | None = None
        self._closed = False
        self._opened = False
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=f"mcp-{transport}", daemon=True)
        self._thread.start()
        try:
            ready.result(timeout=CONNECT_TIMEOUT)
        except BaseException as exc:
            self.close()
            log.warning("MCP %s session failed to open: %r", transport, exc)
            raise ToolCallError(f"cannot open an MCP session ({transport}); is the MCP server running?") from exc

    # --- constructors ------------------------------------------------------------------------

    @classmethod
    def in_process(
        cls, server: Any, *, audit: AuditSink | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> MCPToolPort:
        """A client on the same server object: no subprocess, no socket."""
        from mcp import Client

        return cls(lambda _stack: Client(server, read_timeout_seconds=timeout), transport="mcp-inprocess",
                   audit=audit, timeout=timeout)

    @classmethod
    def stdio(
        cls,
        command: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        audit: AuditSink | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> MCPToolPort:
        """Start the server as a subprocess (e.g. ``python -m safety_governor mcp``).

        The child inherits only a safe minimum of the environment (``PATH``, ``HOME``…) plus
        ``env``: pass the store settings it needs explicitly.
        """
        from mcp import Client, StdioServerParameters

        params = StdioServerParameters(command=command, args=list(args), env=dict(env or {}), cwd=cwd)
        return cls(lambda _stack: Client(params, read_timeout_seconds=timeout), transport="mcp-stdio",
                   audit=audit, timeout=timeout)

    @classmethod
    def http(
        cls,
        url: str,
        *,
        token: str | None = None,
        audit: AuditSink | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> MCPToolPort:
        """Connect over streamable HTTP; ``token`` goes in ``Authorization: Bearer …``."""

        def factory(stack: AsyncExitStack) -> Any:
            import httpx2
            from mcp import Client
            from mcp.client.streamable_http import streamable_http_client

            headers = {"Authorization": f"Bearer {token}"} if token else {}
            http_client = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(timeout, read=max(timeout, 60)))
            stack.push_async_callback(http_client.aclose)
            return Client(streamable_http_client(url, http_client=http_client), read_timeout_seconds=timeout)

        return cls(factory, transport="mcp-http", audit=audit, timeout=timeout)

    # --- the session ---------------------------------------------------------------------------

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        """The loop thread. The session task is the loop's root task (``run_until_complete``):
        anyio ties its worker threads to it, so an in-process server's sync tools reuse the same
        threads (and their store connections) call after call."""
        try:
            self._loop.run_until_complete(self._hold_session(ready))
        except BaseException as exc:  # a failure to open is reported through ``ready``
            if self._opened:
                log.warning("MCP %s session ended: %r", self.transport, exc)
        finally:
            self._loop.close()

    async def _hold_session(self, ready: concurrent.futures.Future[None]) -> None:
        """Enter the client, then keep it open until ``close()``: one task enters and exits it."""
        self._stop = asyncio.Event()
        self._main = asyncio.current_task()
        try:
            async with AsyncExitStack() as stack:
                client = self._factory(stack)
                self._client = await stack.enter_async_context(client)
                self._opened = True
                ready.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise
        finally:
            self._client = None

    def _shutdown(self) -> None:
        """On the loop: end the session (or abandon one still connecting)."""
        if self._stop is not None:
            self._stop.set()
        if self._client is None and self._main is not None:
            self._main.cancel()

    async def _call(self, name: str, arguments: dict[str, Any]) -> Any:
        client = self._client
        if client is None:
            raise ToolCallError(f"the MCP session ({self.transport}) is closed")
        return await client.call_tool(name, arguments)

    # --- the port ------------------------------------------------------------------------------

    @property
    def calls(self) -> deque[ToolCall]:
        return self.trace.calls

    def call(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        with self.trace.record(name, arguments) as outcome:
            if self._closed or not self._thread.is_alive():
                raise ToolCallError(f"the MCP session ({self.transport}) is closed")
            coro = self._call(name, dict(arguments))
            try:
                future = asyncio.run_coroutine_threadsafe(coro, self._loop)
            except RuntimeError as exc:  # the loop ended between the check and now
                coro.close()
                raise ToolCallError(f"the MCP session ({self.transport}) is closed") from exc
            try:
                reply = future.result(timeout=self.timeout + 5)
            except ToolCallError:
                raise
            except concurrent.futures.TimeoutError as exc:
                future.cancel()
                raise ToolCallError(f"'{name}' timed out after {self.timeout:.0f}s") from exc
            except Exception as exc:
                log.warning("MCP %s call to %s failed: %r", self.transport, name, exc)
                raise ToolCallError(f"'{name}' failed: the MCP server did not answer ({self.transport})") from exc
            if reply.is_error:
                text = " ".join(getattr(c, "text", "") for c in reply.content).strip()
                raise ToolCallError(text or f"'{name}' failed")
            if not isinstance(reply.structured_content, dict):
                raise ToolCallError(f"'{name}' returned no structured result")
            outcome["result"] = reply.structured_content
            return outcome["result"]

    def close(self) -> None:
        """Close the session and stop the loop thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.call_soon_threadsafe(self._shutdown)
        except RuntimeError:
            pass  # the loop already finished (the session failed to open)
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            log.warning("MCP %s session did not close within 10 s", self.transport)

    def __enter__(self) -> MCPToolPort:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
