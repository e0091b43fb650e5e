"""Benchmarks of issues #7 and #17: `python -m tests.benchmarks [NAME ...] [--out DIR]`.

Each benchmark prints a table and writes DIR/NAME.json. The emulator always runs in its own
process; comparisons run side by side in one invocation so machine noise hits both.
`openai_runners` (issue #17) installs third-party tools into venvs, so it runs only when named.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import tempfile
import time
from pathlib import Path

import orjson

from batchgpt.checkpoint import Checkpoint, file_fingerprint
from batchgpt.config import RunConfig
from batchgpt.formats import Result, encode
from batchgpt.providers.chatgpt_es import ChatGptEs
from batchgpt.providers.chatgpt_es.page import find_chat_page
from batchgpt.providers.chatgpt_es.session import IMPERSONATE, browser_headers, chat_form
from tests.benchmarks.harness import (
    control,
    emulator_process,
    emulator_stats,
    peak_rss_mb,
    report,
    run_cli,
    write_prompts,
)
from tests.benchmarks.openai_runners import openai_runners


async def _bare_loop(url: str, prompts: int, concurrency: int, *, scrape_each: bool) -> float:
    """The floor: one curl_cffi AsyncSession, scrape once (or per prompt, as the seed did), post."""
    from curl_cffi.requests import AsyncSession

    messages = [
        ChatGptEs.format_message([{"role": "user", "content": f"Prompt number {i}"}])
        for i in range(prompts)
    ]
    queue: asyncio.Queue[str] = asyncio.Queue()
    for message in messages:
        queue.put_nowait(message)
    async with AsyncSession(
        headers=browser_headers(url), impersonate=IMPERSONATE, max_clients=concurrency + 1
    ) as session:
        page = find_chat_page((await session.get(url)).content)
        assert page is not None

        async def worker() -> None:
            nonlocal page
            while not queue.empty():
                message = queue.get_nowait()
                if scrape_each:
                    page = find_chat_page((await session.get(url)).content)
                    assert page is not None
                response = await session.post(
                    url + "/wp-admin/admin-ajax.php", data=chat_form(page, message, url)
                )
                assert orjson.loads(response.content)["data"]

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def overhead(out: Path, work: Path, prompts: int = 5000, rounds: int = 3) -> None:
    """batchgpt against the bare loop, interleaved over `rounds`; medians reported."""
    input_path = write_prompts(work / "overhead.jsonl", prompts)
    no_sync = ["--sync-lines", "1000000000", "--sync-seconds", "1000000"]
    clients = {"batchgpt, default fsync": [], "batchgpt, no group fsync": no_sync}
    seconds: dict[str, list[float]] = {"bare curl_cffi loop": [], **{name: [] for name in clients}}
    requests = 0.0
    with emulator_process() as url:
        for round_ in range(rounds):
            seconds["bare curl_cffi loop"].append(
                asyncio.run(_bare_loop(url, prompts, 32, scrape_each=False))
            )
            for name, extra in clients.items():
                output = work / f"overhead-{round_}-{len(extra)}.results.jsonl"
                control(url, reset_stats=True)
                elapsed, code, err = run_cli(
                    "run",
                    str(input_path),
                    "-o",
                    str(output),
                    "--base-url",
                    url,
                    "--rate",
                    "0",
                    "--concurrency",
                    "32",
                    "--no-progress",
                    "-q",
                    *extra,
                )
                assert code == 0, err
                seconds[name].append(elapsed)
                stats = emulator_stats(url)
                requests = (stats["gets"] + stats["posts"]) / prompts
    bare = statistics.median(seconds["bare curl_cffi loop"])
    rows = [
        {
            "client": name,
            "median s": statistics.median(times),
            "prompts/s": prompts / statistics.median(times),
            "vs bare": f"{bare / statistics.median(times):.0%}",
            "all runs s": " ".join(f"{t:.2f}" for t in times),
        }
        for name, times in seconds.items()
    ]
    rows.append(
        {
            "client": f"requests per prompt (batchgpt): {requests:.4f}",
            "median s": "",
            "prompts/s": "",
            "vs bare": "",
            "all runs s": "",
        }
    )
    report("overhead", rows, out)


def requests_per_prompt(out: Path, work: Path, prompts: int = 2000) -> None:
    rows = []
    input_path = write_prompts(work / "rpp.jsonl", prompts)
    with emulator_process() as url:
        control(url, reset_stats=True)
        asyncio.run(_bare_loop(url, prompts, 8, scrape_each=True))
        stats = emulator_stats(url)
        rows.append(
            {
                "approach": "seed: page GET per prompt",
                "requests/prompt": (stats["gets"] + stats["posts"] - 1) / prompts,
            }
        )
        control(url, reset_stats=True)
        _, code, err = run_cli(
            "run", str(input_path), "--base-url", url, "--concurrency", "8", "--no-progress", "-q"
        )
        assert code == 0, err
        stats = emulator_stats(url)
        rows.append(
            {
                "approach": "batchgpt (4 sessions, nonce reused)",
                "requests/prompt": (stats["gets"] + stats["posts"]) / prompts,
            }
        )
    report("requests_per_prompt", rows, out)


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
            times = sorted(emulator_stats(url)["post_times"])
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
    """Peak RSS validating and running a 1M-line input for real (the run takes ~10 minutes)."""
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
    with emulator_process() as url:
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


def resume(out: Path, work: Path, lines: int = 1_000_000) -> None:
    input_path, _output = _half_done(work, lines, lines // 2)
    with emulator_process(latency=0.05) as url:
        control(url, reset_stats=True)
        started = time.monotonic()
        import subprocess
        import sys

        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "batchgpt",
                "run",
                str(input_path),
                "--base-url",
                url,
                "--no-progress",
                "-q",
            ]
        )
        first = None
        while first is None and time.monotonic() - started < 60:
            time.sleep(0.05)
            posts = emulator_stats(url)["post_times"]
            first = min(posts) if posts else None
        process.terminate()
        process.wait(30)
    assert first is not None
    report(
        "resume",
        [{"job": f"{lines:,} lines, half done", "seconds to first request": first - started}],
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
