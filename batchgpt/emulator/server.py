"""Serving an aiohttp app on loopback, for every local server batchgpt and its tests run: from a
thread of its own (tests, the demo), or in the foreground until SIGINT or SIGTERM (the `batchgpt
emulator` command, for which either signal is a server's normal end: exit 0)."""

from __future__ import annotations

import asyncio
import signal
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web


def app_runner(app: web.Application) -> web.AppRunner:
    """A runner for `app` that logs no access lines and leaves the process's signals alone."""
    return web.AppRunner(app, access_log=None, handle_signals=False)


async def start(
    runner: web.BaseRunner,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> web.BaseRunner:
    """Serve `runner` on `host:port` (0: a free port, see `bound_port`), over TLS with
    `ssl_context`."""
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context).start()
    return runner


def bound_port(runner: web.BaseRunner) -> int:
    return int(runner.addresses[0][1])


@contextmanager
def serving_in_thread(
    make_runner: Callable[[], web.BaseRunner],
    name: str,
    *,
    on_close: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Iterator[int]:
    """Serve the runner `make_runner` builds (in the server's own event loop) on a free loopback
    port from a thread named `name`, over TLS with `ssl_context`; yield the port. On exit,
    `on_close` runs in that loop, then the server stops."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    started: list[web.BaseRunner] = []
    failed: list[BaseException] = []

    async def build_and_start() -> web.BaseRunner:
        # some runners need the running loop to be built
        return await start(make_runner(), ssl_context=ssl_context)

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            started.append(loop.run_until_complete(build_and_start()))
        except BaseException as exc:  # handed to the caller's thread, raised there
            failed.append(exc)
            return
        finally:
            ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError(f"the {name} did not start in 10 s")
    if failed:
        thread.join(10)
        loop.close()
        raise RuntimeError(f"the {name} did not start") from failed[0]
    runner = started[0]
    try:
        yield bound_port(runner)
    finally:
        if on_close is not None:
            asyncio.run_coroutine_threadsafe(on_close(), loop).result(10)
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def serve_until_stopped(
    app: web.Application, host: str, port: int, banner: Callable[[int], str]
) -> None:
    """Serve `app` on `host:port` until SIGINT or SIGTERM; print `banner(bound port)` once it
    listens (scripts read the URL from that first line)."""

    async def main() -> None:
        stopped = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):  # before the banner: a caller may signal then
            asyncio.get_running_loop().add_signal_handler(sig, stopped.set)
        runner = await start(app_runner(app), host, port)
        print(banner(bound_port(runner)), flush=True)
        try:
            await stopped.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
