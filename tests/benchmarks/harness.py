"""Shared pieces of the benchmarks: an emulator in its own process, prompt files, timing, tables."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

PYTHON = sys.executable


@contextmanager
def emulator_process(api: str = "chatgpt-es", **settings: Any) -> Iterator[str]:
    """`batchgpt emulator --api API` in a separate process (so it does not share our core);
    yields its URL (the root: an OpenAI-compatible API is under URL/v1)."""
    args = [PYTHON, "-m", "batchgpt", "emulator", "--api", api, "--port", "0"]
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"http://[\d.]+:\d+", line)
        if not match:
            raise RuntimeError(f"emulator did not start: {line!r}")
        yield match.group(0)
    finally:
        process.terminate()
        process.wait(10)


def control(url: str, **changes: Any) -> dict[str, Any]:
    """Change the emulator's settings (reset_stats=True zeroes its counters)."""
    request = urllib.request.Request(
        f"{url}/__emulator__/config", data=json.dumps(changes).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def emulator_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/__emulator__/stats", timeout=30) as response:
        return json.loads(response.read())


def write_prompts(path: Path, count: int, *, start: int = 0) -> Path:
    """`count` prompt lines of realistic length, ids p<n>."""
    with path.open("wb") as stream:
        for index in range(start, start + count):
            line = {
                "id": f"p{index}",
                "prompt": f"Prompt number {index}: summarise the key ideas of chapter {index % 97} "
                "of the handbook in three sentences.",
            }
            stream.write(orjson.dumps(line) + b"\n")
    return path


def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Wall time, exit code and stderr of one `batchgpt` command."""
    started = time.perf_counter()
    process = subprocess.run(
        [PYTHON, "-m", "batchgpt", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    return time.perf_counter() - started, process.returncode, process.stderr


def peak_rss_mb(*args: str) -> tuple[float, float, int]:
    """Peak RSS (MB), wall time and exit code of one `batchgpt` command, via GNU time's numbers."""
    started = time.perf_counter()
    process = subprocess.run(
        [
            PYTHON,
            "-c",
            "import resource, subprocess, sys; "
            "rc = subprocess.call(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)",
            PYTHON,
            "-m",
            "batchgpt",
            *args,
        ],
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    rss_kb, code = process.stdout.split()[-2:]
    return int(rss_kb) / 1024, elapsed, int(code)


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def report(name: str, rows: list[dict[str, Any]], out_dir: Path) -> None:
    """Print a table and write the rows as JSON."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(
        json.dumps({"machine": machine(), "rows": rows}, indent=2)
    )
    columns = list(rows[0])
    widths = [max(len(str(c)), *(len(_cell(r[c])) for r in rows)) for c in columns]
    print(f"\n== {name} ==")
    print("  ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(_cell(row[c]).ljust(w) for c, w in zip(columns, widths, strict=True)))


def _cell(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
