"""Benchmarks of issues #7 and #17: `python -m tests.benchmarks [NAME ...] [--out DIR]`.

Each benchmark prints a table and writes DIR/NAME.json. The emulator always runs in its own
process; comparisons run side by side in one invocation so machine noise hits both.
`openai_runners` (issue #17) installs third-party tools into venvs, so it runs only when named.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from batchgpt.checkpoint import Checkpoint, file_fingerprint
from batchgpt.config import RunConfig
from batchgpt.emulator import AJAX_PATH
from batchgpt.formats import Result, encode
from batchgpt.providers.chatgpt_es import ChatGptEs
from batchgpt.providers.chatgpt_es.session import IMPERSONATE, STREAM_HEADERS, browser_headers
from tests.benchmarks.harness import (
    PYTHON,
    control,
    emulator_process,
    emulator_stats,
    peak_rss_mb,
    report,
    run_cli,
    write_prompts,
)
from tests.benchmarks.openai_runners import openai_runners

#: Sends one request, returns its status and body.
Send = Callable[..., Awaitable[tuple[int, bytes]]]


@contextlib.asynccontextmanager
async def _bare_client(url: str, concurrency: int, http: str) -> AsyncIterator[Send]:
    """The bare loops' HTTP client: one curl_cffi `AsyncSession` (the floor issue 19 names), or
    one of batchgpt's own `CurlTransport` (the same transport as batchgpt, none of its work)."""
    if http == "curl_cffi":
        from curl_cffi.requests import AsyncSession

        async with AsyncSession(
            headers=browser_headers(url, url),
            impersonate=IMPERSONATE,
            max_clients=concurrency + 1,
        ) as session:

            async def send_curl_cffi(method: str, target: str, **kwargs: Any) -> tuple[int, bytes]:
                reply = await session.request(method, target, **kwargs)
                return reply.status_code, reply.content

            yield send_curl_cffi
        return
    from batchgpt.providers.http import DEFAULT_MAX_ANSWER_BYTES
    from batchgpt.providers.transport import CurlTransport

    transport = CurlTransport(
        headers=browser_headers(url, url),
        browser=IMPERSONATE,
        proxy=None,
        timeout=120.0,
        max_answer_bytes=DEFAULT_MAX_ANSWER_BYTES,
        max_clients=concurrency + 1,
    )

    async def send_transport(method: str, target: str, **kwargs: Any) -> tuple[int, bytes]:
        status, _, body = await transport.request(method, target, **kwargs)
        return status, body

    try:
        yield send_transport
    finally:
        await transport.close()


async def _bare_loop(
    url: str,
    input_path: Path,
    concurrency: int,
    chat: str,
    *,
    scrape_each: bool,
    http: str = "curl_cffi",
) -> float:
    """The floor: one HTTP client (`_bare_client`) that scrapes once (or per prompt, as the seed
    did) and sends each prompt of `input_path` (the file batchgpt is given) the way `chat` needs:
    legacy one POST, AIPKit a cache POST and its stream GET. No retries, no output, no
    checkpoint."""
    from batchgpt.providers.chatgpt_es import aipkit, legacy
    from batchgpt.providers.chatgpt_es.page import read_chat_page

    with input_path.open("rb") as lines:
        messages = [
            ChatGptEs.format_message([{"role": "user", "content": orjson.loads(line)["prompt"]}])
            for line in lines
        ]
    queue: asyncio.Queue[str] = asyncio.Queue()
    for message in messages:
        queue.put_nowait(message)
    guest = "bench-guest"
    client = legacy.client_id(guest)
    async with _bare_client(url, concurrency, http) as send:

        async def scrape() -> Any:
            page = read_chat_page((await send("GET", url))[1])
            found = page.aipkit.bots[0] if chat == "aipkit" and page.aipkit else page.legacy
            assert found is not None
            return found

        chat_of_page = await scrape()

        async def worker() -> None:
            while not queue.empty():
                message = queue.get_nowait()
                target = await scrape() if scrape_each else chat_of_page
                if chat == "legacy":
                    form = legacy.chat_form(target, message, url, client)
                    status, body = await send("POST", url + AJAX_PATH, data=form)
                    assert status == 200 and b"[DONE]" in body
                    continue
                _, cached = await send(
                    "POST", url + AJAX_PATH, data=aipkit.cache_form(target, message)
                )
                key = orjson.loads(cached)["data"]["cache_key"]
                _, body = await send(
                    "GET",
                    url + AJAX_PATH,
                    params=aipkit.stream_query(target, key, guest),
                    headers=STREAM_HEADERS,
                )
                assert b"event: done" in body

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


async def _session_loop(url: str, input_path: Path, concurrency: int, chat: str) -> float:
    """The middle step between the bare loop and the CLI: batchgpt's own `ChatGptEsSession`
    (one, as the bare loop has one curl_cffi session) driven by `concurrency` workers, answers
    parsed and thrown away. What it adds over the bare loop is the session layer; what the CLI
    adds over it is the pipeline (input, output, checkpoints, retries, four sessions)."""
    from batchgpt.providers.chatgpt_es.session import ChatGptEsSession

    with input_path.open("rb") as lines:
        queue: asyncio.Queue[str] = asyncio.Queue()
        for line in lines:
            queue.put_nowait(
                ChatGptEs.format_message(
                    [{"role": "user", "content": orjson.loads(line)["prompt"]}]
                )
            )
    async with ChatGptEsSession(url, max_clients=concurrency + 1, chat=chat) as session:
        await session.connect()

        async def worker() -> None:
            while not queue.empty():
                await session.send(queue.get_nowait())

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def requests_of(stats: dict[str, Any]) -> int:
    """Every request the emulator counted: page GETs, chat POSTs, AIPKit's stream GETs."""
    return int(stats["gets"] + stats["posts"] + stats["streams"] + stats["refreshes"])


def overhead(out: Path, work: Path, prompts: int = 20_000, rounds: int = 5) -> None:
    """batchgpt against the bare loop in each chat generation, interleaved over `rounds`, zero
    latency, 32 in flight; medians reported. batchgpt's time is the whole CLI (start-up, input
    hashing, resume scan, output, checkpoints); the session layer alone is the row between. The
    bare loop on batchgpt's own transport shows what is left of batchgpt's work on top of it. The
    client's CPU time per prompt is the steadier measure on a shared machine: wall time moves
    with whatever else the cores are doing."""
    input_path = write_prompts(work / "overhead.jsonl", prompts)
    rows = []
    for chat in ("legacy", "aipkit"):
        with emulator_process(chat=chat) as url:
            loops = {
                "bare curl_cffi loop": functools.partial(
                    _bare_loop, url, input_path, 32, chat, scrape_each=False
                ),
                "bare loop on CurlTransport": functools.partial(
                    _bare_loop, url, input_path, 32, chat, scrape_each=False, http="transport"
                ),
                "batchgpt session layer": functools.partial(
                    _session_loop, url, input_path, 32, chat
                ),
            }
            seconds: dict[str, list[float]] = {name: [] for name in [*loops, "batchgpt run"]}
            cpu: dict[str, list[float]] = {name: [] for name in seconds}
            requests = 0.0
            for round_ in range(rounds):
                for name, loop in loops.items():
                    before = time.process_time()
                    seconds[name].append(asyncio.run(loop()))
                    cpu[name].append(time.process_time() - before)
                control(url, reset_stats=True)
                children = _children_cpu()
                elapsed, code, err = run_cli(
                    "run",
                    str(input_path),
                    "-o",
                    str(work / f"overhead-{chat}-{round_}.results.jsonl"),
                    "--base-url",
                    url,
                    "--rate",
                    "0",
                    "--concurrency",
                    "32",
                    "--no-progress",
                    "-q",
                )
                assert code == 0, err
                seconds["batchgpt run"].append(elapsed)
                cpu["batchgpt run"].append(_children_cpu() - children)
                stats = emulator_stats(url)
                requests = requests_of(stats) / prompts
        bare = statistics.median(seconds["bare curl_cffi loop"])
        bare_cpu = statistics.median(cpu["bare curl_cffi loop"])
        for name, times in seconds.items():
            rows.append(
                {
                    "chat": chat,
                    "client": name,
                    "median s": statistics.median(times),
                    "prompts/s": prompts / statistics.median(times),
                    "vs bare": f"{bare / statistics.median(times):.0%}",
                    "CPU ms/prompt": statistics.median(cpu[name]) / prompts * 1000,
                    "CPU vs bare": f"{statistics.median(cpu[name]) / bare_cpu:.0%}",
                    "requests/prompt": f"{requests:.4f}" if name == "batchgpt run" else "",
                    "all runs s": " ".join(f"{t:.2f}" for t in times),
                }
            )
    report("overhead", rows, out)


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (the CLI runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def requests_per_prompt(out: Path, work: Path, prompts: int = 2000) -> None:
    """HTTP requests per prompt, as the emulator counts them: the seed's page GET per prompt
    against batchgpt's one scrape per session, in each generation."""
    rows = []
    input_path = write_prompts(work / "rpp.jsonl", prompts)
    for chat in ("legacy", "aipkit"):
        with emulator_process(chat=chat) as url:
            control(url, reset_stats=True)
            asyncio.run(_bare_loop(url, input_path, 8, chat, scrape_each=True))
            stats = emulator_stats(url)
            seed = (requests_of(stats) - 1) / prompts  # the first scrape is not per prompt
            rows.append(
                {
                    "chat": chat,
                    "approach": "page GET per prompt (the seed)",
                    "requests/prompt": f"{seed:.4f}",
                }
            )
            control(url, reset_stats=True)
            _, code, err = run_cli(
                "run",
                str(input_path),
                "--base-url",
                url,
                "--concurrency",
                "8",
                "--restart",
                "--yes",
                "--no-progress",
                "-q",
            )
            assert code == 0, err
            stats = emulator_stats(url)
            rows.append(
                {
                    "chat": chat,
                    "approach": "batchgpt (4 sessions, nonce reused)",
                    "requests/prompt": f"{requests_of(stats) / prompts:.4f}",
                }
            )
    report("requests_per_prompt", rows, out)


def probe(out: Path, work: Path, rounds: int = 5) -> None:
    """`batchgpt probe --ask`: the whole command, start-up included, against each generation."""
    rows = []
    for chat in ("legacy", "aipkit"):
        with emulator_process(chat=chat) as url:
            times = []
            for _ in range(rounds):
                elapsed, code, err = run_cli("probe", url, "--ask", "Hola")
                assert code == 0, err
                times.append(elapsed)
        rows.append(
            {
                "chat": chat,
                "command": "probe URL --ask Hola",
                "median s": statistics.median(times),
                "max s": max(times),
            }
        )
    report("probe", rows, out)


def rate_accuracy(out: Path, work: Path) -> None:
    from batchgpt.emulator import max_in_window

    rows = []
    with emulator_process() as url:
        for rate, prompts, concurrency in ((20, 200, 8), (200, 2000, 32)):
            input_path = write_prompts(work / f"rate-{rate}.jsonl", prompts)
            control(url, reset_stats=True)
            _, code, err = run_cli(
                "run",
                str(input_path),
                "--base-url",
                url,
                "--rate",
                str(rate),
                "--concurrency",
                str(concurrency),
                "--no-progress",
                "-q",
            )
            assert code == 0, err
            times = sorted(emulator_stats(url)["post_times"])  # chat POSTs: one per prompt
            achieved = (len(times) - 1) / (times[-1] - times[0])
            rows.append(
                {
                    "target/s": rate,
                    "prompts": prompts,
                    "achieved/s": achieved,
                    "error": f"{achieved / rate - 1:+.2%}",
                    "busiest 1 s window": max_in_window(times),
                }
            )
    report("rate_accuracy", rows, out)


def _half_done(work: Path, lines: int, done: int) -> tuple[Path, Path]:
    """A 1M-line job whose first `done` prompts are already in the output, with its checkpoint."""
    input_path = write_prompts(work / "million.jsonl", lines)
    output = work / "million.results.jsonl"
    with output.open("wb") as stream:
        for index in range(done):
            stream.write(
                encode(
                    Result(
                        f"p{index}",
                        index + 1,
                        "gpt-4o",
                        response="answer",
                        attempts=1,
                        latency_ms=10,
                    ),
                    "native",
                )
            )
    config = RunConfig.build({"input": str(input_path), "output": str(output)})
    header = Checkpoint(
        str(input_path),
        file_fingerprint(input_path),
        config.result_options(),
        output_offset=output.stat().st_size,
        counts={"ok": done, "errors": {}},
    )
    Path(f"{output}.ckpt").write_bytes(header.dump())
    return input_path, output


def memory(out: Path, work: Path, lines: int = 1_000_000) -> None:
    """Peak RSS validating and running a 1M-line input for real, against the legacy chat (one
    request a prompt: the memory is the run's own bookkeeping; the run takes ~15 minutes)."""
    rows = []
    input_path = write_prompts(work / "million.jsonl", lines)
    rss, seconds, code = peak_rss_mb("validate", str(input_path))
    rows.append(
        {
            "command": f"validate ({lines:,} lines)",
            "peak RSS MB": rss,
            "seconds": seconds,
            "exit": code,
        }
    )
    with emulator_process(chat="legacy") as url:
        rss, seconds, code = peak_rss_mb(
            "run", str(input_path), "--base-url", url, "--concurrency", "32", "--no-progress", "-q"
        )
    rows.append(
        {
            "command": f"run ({lines:,} lines, all sent)",
            "peak RSS MB": rss,
            "seconds": seconds,
            "exit": code,
        }
    )
    report("memory", rows, out)


def resume(out: Path, work: Path, lines: int = 1_000_000, rounds: int = 5) -> None:
    """Start to first request of a half-done `lines`-line job, median of `rounds` runs, each on
    the job as it was (a run is stopped at its first request; what it wrote is undone)."""
    input_path, output = _half_done(work, lines, lines // 2)
    checkpoint = Path(f"{output}.ckpt")
    saved = output.read_bytes(), checkpoint.read_bytes()
    seconds = []
    with emulator_process(latency=0.05) as url:
        for _ in range(rounds):
            output.write_bytes(saved[0])
            checkpoint.write_bytes(saved[1])
            control(url, reset_stats=True)
            started = time.monotonic()
            command = ["run", str(input_path), "--base-url", url, "--no-progress", "-q"]
            process = subprocess.Popen([PYTHON, "-m", "batchgpt", *command])
            first = None
            while first is None and time.monotonic() - started < 60:
                time.sleep(0.05)
                posts = emulator_stats(url)["post_times"]
                first = min(posts) if posts else None
            process.terminate()
            process.wait(30)
            assert first is not None
            seconds.append(first - started)
    report(
        "resume",
        [
            {
                "job": f"{lines:,} lines, half done",
                "seconds to first request": statistics.median(seconds),
                "all runs s": " ".join(f"{t:.2f}" for t in seconds),
            }
        ],
        out,
    )


def latency_hiding(out: Path, work: Path, prompts: int = 1920) -> None:
    input_path = write_prompts(work / "latency.jsonl", prompts)
    with emulator_process(latency=0.5) as url:
        seconds, code, err = run_cli(
            "run",
            str(input_path),
            "--base-url",
            url,
            "--rate",
            "0",
            "--concurrency",
            "64",
            "--no-progress",
            "-q",
        )
    assert code == 0, err
    ideal = 64 / 0.5
    report(
        "latency_hiding",
        [
            {
                "prompts": prompts,
                "seconds": seconds,
                "prompts/s": prompts / seconds,
                "ideal/s": ideal,
                "of ideal": f"{prompts / seconds / ideal:.1%}",
            }
        ],
        out,
    )


def startup(out: Path, work: Path) -> None:
    times = [run_cli("--help")[0] for _ in range(15)]
    report(
        "startup",
        [
            {
                "command": "batchgpt --help",
                "median ms": statistics.median(times) * 1000,
                "min ms": min(times) * 1000,
            }
        ],
        out,
    )


BENCHMARKS = {
    "overhead": overhead,
    "requests_per_prompt": requests_per_prompt,
    "probe": probe,
    "rate_accuracy": rate_accuracy,
    "memory": memory,
    "resume": resume,
    "latency_hiding": latency_hiding,
    "startup": startup,
    "openai_runners": openai_runners,
}
#: Run when no name is given: all but those that install other tools.
DEFAULT = [name for name in BENCHMARKS if name != "openai_runners"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks", description=__doc__)
    parser.add_argument(
        "names", nargs="*", choices=[*BENCHMARKS, []], help="default: all but openai_runners"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument(
        "--cookbook", type=Path, help="openai_runners: a local api_request_parallel_processor.py"
    )
    parser.add_argument(
        "--venvs", type=Path, help="openai_runners: keep (and reuse) the tools' venvs here"
    )
    args = parser.parse_args()
    benchmarks = {
        **BENCHMARKS,
        "openai_runners": functools.partial(
            openai_runners, cookbook=args.cookbook, venvs=args.venvs
        ),
    }
    with tempfile.TemporaryDirectory(prefix="batchgpt-bench-") as work:
        for name in args.names or DEFAULT:
            benchmarks[name](args.out, Path(work))


if __name__ == "__main__":
    main()
