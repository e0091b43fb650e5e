"""Daemons started by this harness and stopped by their pid, never by name.

A `Daemon` is one process group the harness launched itself (`start_new_session`, so a Ctrl-C at
the terminal reaches the harness, which then stops it in order). `stop` sends SIGTERM to that pid,
waits, and only then SIGKILLs the group it created.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


class ServiceError(RuntimeError):
    """A daemon did not start, or a set-up command failed."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def run(
    args: Sequence[str], *, input_text: str | None = None, timeout: float = 120, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a set-up command; a non-zero exit is a `ServiceError` quoting its output."""
    done = subprocess.run(
        list(args),
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-2000:]
        raise ServiceError(f"{args[0]} exited {done.returncode}: {output}")
    return done


class Daemon:
    """One long-running process this harness started; `log` collects its stdout and stderr."""

    def __init__(self, name: str, args: Sequence[str], log: Path, **popen: object) -> None:
        self.name = name
        self.args = list(args)
        self.log = log
        self.popen = popen
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, ready: Callable[[], bool], timeout: float = 60) -> None:
        """Launch and wait until `ready()` holds; a process that dies first is a ServiceError."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                **self.popen,  # type: ignore[call-overload]
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceError(f"{self.name} exited {self.process.returncode}: {self.tail()}")
            if ready():
                return
            time.sleep(0.1)
        raise ServiceError(f"{self.name} not ready after {timeout:g} s: {self.tail()}")

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the pid we started, wait, then SIGKILL its process group if still there."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def tail(self, size: int = 1500) -> str:
        try:
            return self.log.read_bytes()[-size:].decode("utf-8", "replace")
        except OSError:
            return ""
