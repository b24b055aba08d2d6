"""Line-delimited JSON-RPC over stdin/stdout, with a write ack for our own messages.

Why not ``mcp.server.stdio.stdio_server``: its writer is fed through a
zero-buffer stream, so ``await write_stream.send(msg)`` only means "the writer
task took it", not "it is on stdout"; and the SDK's notify path swallows write
errors. The hub acks a delivery only once the channel notification's bytes
were flushed to the pipe, so this writer tells the sender exactly that.

Uses only the SDK's public message types (``SessionMessage``, the JSON-RPC
adapter); the streams plug into ``Server.run(read, write, init_options)``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from mcp.shared.message import SessionMessage
from mcp.types import jsonrpc_message_adapter

ReadStream = MemoryObjectReceiveStream[SessionMessage | Exception]


@dataclass(eq=False)
class _Pending:
    """A message queued by ``AckedWriter``, plus its write ack."""

    message: SessionMessage
    done: anyio.Event = field(default_factory=anyio.Event)
    error: OSError | None = None


class AckedWriter:
    """Writes through the same stdout writer as the SDK, but waits for the flush."""

    def __init__(self, send: MemoryObjectSendStream[Any]) -> None:
        self._send = send

    async def send(self, message: SessionMessage) -> None:
        """Return once ``message`` was flushed to stdout; ``ConnectionError`` otherwise."""
        pending = _Pending(message)
        try:
            await self._send.send(pending)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise ConnectionResetError("stdio transport closed") from exc
        await pending.done.wait()
        if pending.error is not None:
            raise ConnectionResetError(f"stdout write failed: {pending.error!r}")

    def close(self) -> None:
        self._send.close()


def _claim_stdout() -> tuple[BinaryIO, Callable[[], None]]:
    """Keep the real stdout for JSON-RPC; point fd 1 at stderr so stray prints can't corrupt it."""
    sys.stdout.flush()
    wire_fd = os.dup(1)
    os.dup2(2, 1)

    def restore() -> None:
        sys.stdout.flush()
        os.dup2(wire_fd, 1)
        os.close(wire_fd)

    return os.fdopen(wire_fd, "wb", closefd=False), restore


@asynccontextmanager
async def stdio_streams(
    stdin: BinaryIO | None = None, stdout: BinaryIO | None = None
) -> AsyncIterator[tuple[ReadStream, MemoryObjectSendStream[Any], AckedWriter]]:
    """Yield ``(read, write, acked)``: ``read``/``write`` for ``Server.run``, ``acked`` for us.

    With no ``stdout`` given, fd 1 is claimed (see ``_claim_stdout``) and restored on exit.
    """
    restore = None
    if stdout is None:
        stdout, restore = _claim_stdout()
    inp, out = stdin or sys.stdin.buffer, stdout
    read_send, read_recv = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_send, write_recv = anyio.create_memory_object_stream[Any](0)
    acked = AckedWriter(write_send.clone())
    writer_done = anyio.Event()

    async def reader() -> None:
        async with read_send:
            while line := await anyio.to_thread.run_sync(inp.readline, abandon_on_cancel=True):
                try:
                    msg = jsonrpc_message_adapter.validate_json(line, by_name=False)
                    await read_send.send(SessionMessage(msg))
                except ValueError as exc:  # not JSON-RPC: the SDK answers parse errors itself
                    if line.strip():
                        await read_send.send(exc)

    async def writer() -> None:
        async with write_recv:
            async for item in write_recv:
                pending = item if isinstance(item, _Pending) else None
                msg: SessionMessage = pending.message if pending else item
                data = msg.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                try:
                    await anyio.to_thread.run_sync(out.write, data.encode())
                    await anyio.to_thread.run_sync(out.flush)
                except OSError as exc:  # peer gone: fail this send; closing fails later ones
                    if pending:
                        pending.error = exc
                    break
                finally:
                    if pending:
                        pending.done.set()
        writer_done.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            tg.start_soon(writer)
            try:
                yield read_recv, write_send, acked
            finally:  # Server.run closed write_send; with ours closed the writer drains, ends
                acked.close()
                with anyio.move_on_after(5, shield=True):
                    await writer_done.wait()
                tg.cancel_scope.cancel()  # the reader may still block on stdin
    finally:
        if restore is not None:
            restore()
