"""batchgpt `--provider openai` against the runners people use for OpenAI-compatible endpoints,
side by side in one run on one local fake server (`batchgpt emulator --api openai`, own process):

    python -m tests.benchmarks openai_runners [--cookbook PATH] [--venvs DIR]

- batchgpt (this checkout), and a bare HTTP loop (curl_cffi AsyncSession, N in flight: the floor);
- bespokelabs-curator's online OpenAI backend and prompto, each pip-installed by this benchmark into
  a venv of its own (a temp folder, or `--venvs DIR` to keep and reuse them), never dependencies;
- the OpenAI cookbook's `api_request_parallel_processor.py` when `--cookbook` names a local copy
  (the project does not ship it). It runs unmodified in curator's venv (aiohttp and tiktoken; its
  cl100k_base file is the one litellm bundles, so nothing is downloaded) and, since it accepts only
  `https://` URLs, against the same emulator served over TLS with a throw-away certificate.

Every tool runs as a whole command (start-up included) with telemetry and hub access turned off;
nothing leaves loopback. A calibration run (1,000 prompts) gives each tool's speed; a tool that
would need more than a scenario's time budget for its prompt count runs fewer prompts (shown in
brackets beside its number) instead of holding the machine for hours.

Scenarios: prompts/s at zero latency (median of rounds, interleaved), at 200 ms latency with 32 in
flight (ideal 160/s; tools that pace by rate instead of by requests in flight get 9,600/min, the
rate that ideal means), peak RSS over 100,000 prompts, and, after three kill -9 and a rerun, result
lines per prompt, missing and duplicate ids, requests sent per prompt.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from tests.benchmarks.harness import PYTHON, control, emulator_process, emulator_stats, report

ROOT = Path(__file__).resolve().parents[2]
DRIVERS = Path(__file__).with_name("runner_drivers.py")
MODEL = "gpt-4o-mini"
KEY = "sk-bench"
CONCURRENCY = 32
UNLIMITED_PER_MINUTE = 10_000_000
INSTALL_TIMEOUT = 1200
RUN_TIMEOUT = 1800
#: Environment for every tool: no telemetry, no hub, no downloads, no proxies.
OFFLINE = {
    "TELEMETRY_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "NO_PROXY": "*",
    "OPENAI_API_KEY": KEY,
}


@dataclass
class Job:
    """One run of one tool: its input, its folder (output, caches), the server, its pace."""

    prompts: Path
    folder: Path
    base_url: str
    #: For tools paced by a rate instead of by requests in flight.
    per_minute: int = UNLIMITED_PER_MINUTE


@dataclass
class Tool:
    name: str
    version: str
    #: argv, environment additions and cwd of one run.
    command: Callable[[Job], tuple[list[str], dict[str, str], Path]]
    #: Result lines written, and the ids they name.
    results: Callable[[Job], list[str]]
    #: Why it could not run (it keeps its row, marked).
    unavailable: str = ""
    tls: bool = False
    notes: list[str] = field(default_factory=list)


# prompts and results ----------------------------------------------------------------------------


def prompt_text(index: int) -> str:
    return (
        f"Prompt number {index}: summarise the key ideas of chapter {index % 97} "
        "of the handbook in three sentences."
    )


def write_prompts(folder: Path, count: int) -> Path:
    """The common prompt file (`{"id", "prompt"}` lines); tools get their own shape from it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "prompts.jsonl"
    with path.open("wb") as out:
        for index in range(count):
            out.write(orjson.dumps({"id": f"p{index}", "prompt": prompt_text(index)}) + b"\n")
    return path


def read_jsonl(path: Path) -> Iterator[Any]:
    if not path.exists():
        return
    with path.open("rb") as lines:
        for raw in lines:
            if raw.strip():
                with contextlib.suppress(orjson.JSONDecodeError):
                    yield orjson.loads(raw)


def convert(source: Path, target: Path, shape: Callable[[dict[str, Any]], Any]) -> Path:
    if not target.exists():
        with target.open("wb") as out:
            for row in read_jsonl(source):
                out.write(orjson.dumps(shape(row)) + b"\n")
    return target


# the tools --------------------------------------------------------------------------------------


def _version(package: str, python: str = PYTHON) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "?"


def install(venvs: Path, name: str, requirement: str) -> tuple[Path | None, str]:
    """A venv with `requirement` (reused when it already imports); its python, or the reason."""
    venv = venvs / name
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    started = time.monotonic()
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", requirement],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if not line.startswith("WARNING")]
        return None, f"pip install {requirement} failed: " + " | ".join(errors[-3:])
    print(f"  {requirement}: installed in {time.monotonic() - started:.0f} s", flush=True)
    return python, ""


def batchgpt_tool() -> Tool:
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()

    def command(job: Job) -> tuple[list[str], dict[str, str], Path]:
        argv = [
            PYTHON,
            "-m",
            "batchgpt",
            "run",
            str(job.prompts),
            "-o",
            str(job.folder / "results.jsonl"),
            "--provider",
            "openai",
            "--base-url",
            job.base_url,
            "--model",
            MODEL,
            "--concurrency",
            str(CONCURRENCY),
            "--rate",
            "0",
            "--no-progress",
            "-q",
        ]
        return argv, {}, job.folder

    def results(job: Job) -> list[str]:
        return [
            r["id"] for r in read_jsonl(job.folder / "results.jsonl") if r.get("status") == "ok"
        ]

    return Tool(
        "batchgpt", f"{importlib.metadata.version('batchgpt')} ({commit})", command, results
    )


def bare_tool() -> Tool:
    def command(job: Job) -> tuple[list[str], dict[str, str], Path]:
        argv = [
            PYTHON,
            str(DRIVERS),
            "bare",
            "--input",
            str(job.prompts),
            "--base-url",
            job.base_url,
            "--concurrency",
            str(CONCURRENCY),
        ]
        return argv, {}, job.folder

    version = f"curl_cffi {importlib.metadata.version('curl_cffi')}"
    tool = Tool("bare curl_cffi loop", version, command, lambda job: [])
    tool.notes.append("writes nothing, resumes nothing: the floor for speed only")
    return tool


def curator_tool(venvs: Path) -> Tool:
    python, why = install(venvs, "curator", "bespokelabs-curator")

    def command(job: Job) -> tuple[list[str], dict[str, str], Path]:
        assert python is not None
        argv = [
            str(python),
            str(DRIVERS),
            "curator",
            "--input",
            str(job.prompts),
            "--output",
            str(job.folder / "results.jsonl"),
            "--cache",
            str(job.folder / "cache"),
            "--base-url",
            job.base_url,
            "--concurrency",
            str(CONCURRENCY),
        ]
        return argv, {"CURATOR_CACHE_DIR": str(job.folder / "cache")}, job.folder

    def results(job: Job) -> list[str]:
        return [r["id"] for r in read_jsonl(job.folder / "results.jsonl") if r.get("response")]

    version = _version("bespokelabs-curator", str(python)) if python else "not installed"
    tool = Tool("curator (online openai)", version, command, results, unavailable=why)
    tool.notes.append("max_concurrent_requests=32; resumes from its cache dir")
    return tool


def prompto_tool(venvs: Path) -> Tool:
    python, why = install(venvs, "prompto", "prompto[openai]")

    def command(job: Job) -> tuple[list[str], dict[str, str], Path]:
        assert python is not None
        experiment = convert(
            job.prompts,
            job.folder / "experiment.jsonl",
            lambda row: {
                "id": row["id"],
                "api": "openai",
                "model_name": MODEL,
                "prompt": row["prompt"],
                "parameters": {},
            },
        )
        (job.folder / "data").mkdir(exist_ok=True)
        argv = [
            str(python.with_name("prompto_run_experiment")),
            "--file",
            str(experiment),
            "--data-folder",
            str(job.folder / "data"),
            "--max-queries",
            str(job.per_minute),
        ]
        return argv, {"OPENAI_BASE_URL": job.base_url}, job.folder

    def results(job: Job) -> list[str]:
        ids = []
        for path in sorted((job.folder / "data" / "output").glob("**/*-completed-*.jsonl")):
            ids += [r["id"] for r in read_jsonl(path) if isinstance(r.get("response"), str)]
        return ids

    version = _version("prompto", str(python)) if python else "not installed"
    tool = Tool("prompto", version, command, results, unavailable=why)
    tool.notes.append("paced by --max-queries per minute, no cap on requests in flight")
    return tool


def cookbook_tool(path: Path | None, curator: Tool, venvs: Path) -> Tool:
    def command(job: Job) -> tuple[list[str], dict[str, str], Path]:
        assert path is not None
        requests = convert(
            job.prompts,
            job.folder / "requests.jsonl",
            lambda row: {
                "model": MODEL,
                "messages": [{"role": "user", "content": row["prompt"]}],
                "metadata": {"id": row["id"]},
            },
        )
        argv = [
            str(venvs / "curator" / "bin" / "python"),
            str(path),
            "--requests_filepath",
            str(requests),
            "--save_filepath",
            str(job.folder / "results.jsonl"),
            "--request_url",
            job.base_url + "/chat/completions",
            "--api_key",
            KEY,
            "--max_requests_per_minute",
            str(job.per_minute),
            "--max_tokens_per_minute",
            str(10**12),
            "--logging_level",
            "30",
        ]
        return argv, {}, job.folder

    def results(job: Job) -> list[str]:
        return [
            line[2]["id"]
            for line in read_jsonl(job.folder / "results.jsonl")
            if isinstance(line, list) and len(line) == 3 and "choices" in line[1]
        ]

    if path is None:
        return Tool(
            "OpenAI cookbook parallel processor",
            "–",
            command,
            results,
            unavailable="no local copy given (--cookbook PATH); the project does not ship it",
        )
    version = f"local copy, sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"
    unavailable = "" if not curator.unavailable else f"needs curator's venv: {curator.unavailable}"
    tool = Tool(
        "OpenAI cookbook parallel processor", version, command, results, unavailable, tls=True
    )
    tool.notes.append(
        "paced by max_requests_per_minute, no cap in flight; its bucket starts full, so a "
        "minute's worth may go out at once; https only, so over TLS"
    )
    return tool


# running ----------------------------------------------------------------------------------------


def tool_env(
    tool: Tool, venvs: Path, extra: dict[str, str], certificate: Path | None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHGPT_", "OPENAI_"))}
    env.update(OFFLINE)
    tokenizers = next(
        (venvs / "curator").glob("lib/python*/site-packages/litellm/litellm_core_utils/tokenizers"),
        None,
    )
    if tokenizers is not None:
        env["TIKTOKEN_CACHE_DIR"] = str(tokenizers)
    if tool.tls and certificate is not None:
        env["SSL_CERT_FILE"] = str(certificate)
    env.update(extra)
    return env


@dataclass
class Run:
    seconds: float
    rss_mb: float
    code: int
    tail: str


_RUSAGE = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "print('RUSAGE', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc, file=sys.stderr)"
)


@dataclass
class Started:
    """A command started under the RSS wrapper; its stderr goes to a file, never to an unread
    pipe (a full pipe would stall a chatty tool while it is being watched)."""

    process: subprocess.Popen[bytes]
    stderr: Path
    started: float


def start(argv: list[str], env: dict[str, str], cwd: Path) -> Started:
    """The command under a wrapper that reports its peak RSS, in a process group of its own."""
    stderr = cwd / f"stderr-{time.monotonic_ns()}.txt"
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            [PYTHON, "-c", _RUSAGE, *argv],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            start_new_session=True,
        )
    return Started(process, stderr, time.monotonic())


def kill(started: Started) -> None:
    """kill -9 the command and everything it started (its own process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(started.process.pid, signal.SIGKILL)
    started.process.wait()


def finish(started: Started) -> Run:
    try:
        started.process.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill(started)
        return Run(time.monotonic() - started.started, 0.0, -9, f"timed out after {RUN_TIMEOUT} s")
    seconds = time.monotonic() - started.started
    err = started.stderr.read_text(errors="replace")
    match = re.search(r"RUSAGE (\d+) (-?\d+)", err)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("RUSAGE")]
    tail = " | ".join(lines[-3:])[-400:]
    if match is None:
        return Run(seconds, 0.0, started.process.returncode, tail)
    return Run(seconds, int(match[1]) / 1024, int(match[2]), tail)


class Bench:
    """The tools, the emulator processes (plain and TLS) and the work folder of one benchmark."""

    def __init__(self, tools: list[Tool], work: Path, venvs: Path) -> None:
        self.tools = tools
        self.work = work
        self.venvs = venvs
        self.certificate: Path | None = None

    def job(self, tool: Tool, scenario: str, prompts: Path, base_url: str, per_minute: int) -> Job:
        folder = self.work / scenario / re.sub(r"\W+", "-", tool.name)
        folder.mkdir(parents=True, exist_ok=True)
        return Job(prompts, folder, base_url, per_minute)

    def run(self, tool: Tool, job: Job) -> Run:
        argv, extra, cwd = tool.command(job)
        return finish(start(argv, tool_env(tool, self.venvs, extra, self.certificate), cwd))

    @contextlib.contextmanager
    def servers(self, **settings: Any) -> Iterator[dict[bool, tuple[str, str]]]:
        """The emulator over plain HTTP, and another over TLS when a tool needs it: by `tls`,
        the plain root URL of its control endpoints and the root URL a tool is given."""
        with contextlib.ExitStack() as stack:
            plain = stack.enter_context(emulator_process(api="openai", **settings))
            urls = {False: (plain, plain)}
            if any(tool.tls and not tool.unavailable for tool in self.tools):
                urls[True] = stack.enter_context(self._tls_emulator(settings))
            yield urls

    @contextlib.contextmanager
    def _tls_emulator(self, settings: dict[str, Any]) -> Iterator[tuple[str, str]]:
        if self.certificate is None:
            self.certificate = self.work / "localhost.pem"
            subprocess.run(
                [
                    "openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                    "-keyout",
                    str(self.work / "localhost.key"),
                    "-out",
                    str(self.certificate),
                ],
                check=True,
                capture_output=True,
            )
        code = (
            "import sys, json; from tests.benchmarks.openai_runners import serve_tls; "
            "serve_tls(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))"
        )
        process = subprocess.Popen(
            [
                PYTHON,
                "-c",
                code,
                str(self.certificate),
                str(self.work / "localhost.key"),
                json.dumps(settings),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            match = re.search(r"(https://[\d.]+:\d+)\D.*(http://[\d.]+:\d+)", line)
            if not match:
                raise RuntimeError(f"TLS emulator did not start: {line!r}")
            yield match[2], match[1]
        finally:
            process.terminate()
            process.wait(10)


def serve_tls(certificate: str, key: str, settings: dict[str, Any]) -> None:
    """The OpenAI-compatible emulator over TLS until terminated (for the cookbook script), and
    the same emulator over plain HTTP on another port for the benchmark's control requests."""
    import asyncio
    import ssl

    from batchgpt.emulator.openai import OpenAIEmulator, OpenAIEmulatorConfig
    from batchgpt.emulator.server import app_runner, bound_port, start

    config = OpenAIEmulatorConfig()
    config.update(settings)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)

    async def main() -> None:
        emulator = OpenAIEmulator(config)
        tls = await start(app_runner(emulator.app), ssl_context=context)
        plain = await start(app_runner(emulator.app))
        print(
            f"TLS emulator on https://127.0.0.1:{bound_port(tls)}, "
            f"control on http://127.0.0.1:{bound_port(plain)}",
            flush=True,
        )
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


# scenarios --------------------------------------------------------------------------------------


def prompt_file(bench: Bench, count: int) -> Path:
    folder = bench.work / f"prompts-{count}"
    path = folder / "prompts.jsonl"
    return path if path.exists() else write_prompts(folder, count)


def calibrate(bench: Bench, count: int = 1000) -> dict[str, float]:
    """Each tool's prompts/s at zero latency on a small file (also a warm-up of its imports)."""
    speeds = {}
    with bench.servers() as urls:
        for tool in bench.tools:
            if not tool.unavailable:
                job = bench.job(
                    tool,
                    "calibrate",
                    prompt_file(bench, count),
                    urls[tool.tls][1] + "/v1",
                    UNLIMITED_PER_MINUTE,
                )
                speeds[tool.name] = count / bench.run(tool, job).seconds
                print(f"  {tool.name}: {speeds[tool.name]:.0f} prompts/s", flush=True)
    return speeds


def sizes(
    speeds: dict[str, float], count: int, budget: float, ceiling: float = math.inf
) -> dict[str, int]:
    """Each tool's prompt count for a scenario: `count`, or, when that would take longer than
    `budget` seconds at its calibrated speed (capped at `ceiling`/s), what fits in the budget
    (whole thousands, at least 1,000). A smaller count is shown beside the tool's number."""
    return {
        name: count
        if count / min(speed, ceiling) <= budget
        else max(1000, int(min(speed, ceiling) * budget) // 1000 * 1000)
        for name, speed in speeds.items()
    }


def throughput(
    bench: Bench, counts: dict[str, int], rounds: int, latency: float, per_minute: int
) -> dict[str, dict[str, Any]]:
    """Prompts/s of each tool (whole command), median over `rounds` interleaved."""
    seconds: dict[str, list[float]] = {name: [] for name in counts}
    outcome: dict[str, dict[str, Any]] = {}
    with bench.servers(latency=latency) as urls:
        for round_ in range(rounds):
            for tool in bench.tools:
                if tool.name not in counts:
                    continue
                count = counts[tool.name]
                url, api = urls[tool.tls]
                scenario = f"speed-{latency}-{count}-{round_}"
                job = bench.job(tool, scenario, prompt_file(bench, count), api + "/v1", per_minute)
                control(url, reset_stats=True)
                run = bench.run(tool, job)
                answered = emulator_stats(url)["answers"]
                written = len(tool.results(job))
                print(
                    f"  {tool.name}: {count} in {run.seconds:.2f} s, exit {run.code}, "
                    f"{answered} answered",
                    flush=True,
                )
                ok = (
                    run.code == 0
                    and answered >= count
                    and (written >= count or (not written and tool.name.startswith("bare")))
                )
                if ok:
                    seconds[tool.name].append(run.seconds)
                else:
                    failed = f"exit {run.code}, {answered} answered, {written} written: {run.tail}"
                    outcome[tool.name] = {"failed": failed}
    for name, times in seconds.items():
        if times:
            median = statistics.median(times)
            outcome[name] = {
                "prompts/s": counts[name] / median,
                "prompts": counts[name],
                "runs s": times,
            }
    return outcome


def memory(bench: Bench, counts: dict[str, int]) -> dict[str, dict[str, Any]]:
    outcome: dict[str, dict[str, Any]] = {}
    with bench.servers() as urls:
        for tool in bench.tools:
            if tool.name not in counts:
                continue
            count = counts[tool.name]
            prompts = prompt_file(bench, count)
            job = bench.job(
                tool, f"memory-{count}", prompts, urls[tool.tls][1] + "/v1", UNLIMITED_PER_MINUTE
            )
            run = bench.run(tool, job)
            print(
                f"  {tool.name}: {count} prompts, {run.rss_mb:.0f} MB, {run.seconds:.0f} s, "
                f"exit {run.code}",
                flush=True,
            )
            outcome[tool.name] = {
                "peak RSS MB": run.rss_mb,
                "prompts": count,
                "seconds": run.seconds,
                "exit": run.code,
            }
            if run.code != 0:
                outcome[tool.name]["failed"] = run.tail
    return outcome


def kill_and_rerun(
    bench: Bench, counts: dict[str, int], kills: int, latency: float
) -> dict[str, dict[str, Any]]:
    """Kill -9 each tool `kills` times, each time once the server has answered a quarter of the
    prompts in that run, then let a last run finish; count what the output holds."""
    per_minute = int(CONCURRENCY / latency * 60)
    outcome: dict[str, dict[str, Any]] = {}
    with bench.servers(latency=latency) as urls:
        for tool in bench.tools:
            if tool.name not in counts or tool.name.startswith("bare"):
                continue
            count = counts[tool.name]
            url, api = urls[tool.tls]
            prompts = prompt_file(bench, count)
            job = bench.job(tool, f"kill-{count}", prompts, api + "/v1", per_minute)
            argv, extra, cwd = tool.command(job)
            env = tool_env(tool, bench.venvs, extra, bench.certificate)
            requests = 0
            for _ in range(kills):
                control(url, reset_stats=True)
                started = start(argv, env, cwd)
                deadline = time.monotonic() + 300
                while started.process.poll() is None and time.monotonic() < deadline:
                    if emulator_stats(url)["answers"] >= count // 4:
                        break
                    time.sleep(0.02)
                kill(started)
                time.sleep(0.5)  # let the server finish what the dead run left in flight
                requests += emulator_stats(url)["requests"]
            control(url, reset_stats=True)
            run = finish(start(argv, env, cwd))
            requests += emulator_stats(url)["requests"]
            ids = Counter(tool.results(job))
            expected = {f"p{n}" for n in range(count)}
            outcome[tool.name] = {
                "prompts": count,
                "lines/prompt": sum(ids.values()) / count,
                "missing": len(expected - set(ids)),
                "duplicated": sum(1 for n in ids.values() if n > 1),
                "requests/prompt": requests / count,
                "exit": run.code,
            }
            print(f"  {tool.name}: {outcome[tool.name]}", flush=True)
    return outcome


def _cell(result: dict[str, Any], key: str, count: int) -> str:
    """A number of one scenario, with its prompt count when the tool ran fewer; or why not."""
    if key not in result:
        return str(result.get("failed", "–"))
    value = f"{result[key]:,.0f}"
    return value if result.get("prompts", count) == count else f"{value} ({result['prompts']:,})"


def openai_runners(
    out: Path, work: Path, *, cookbook: Path | None = None, venvs: Path | None = None
) -> None:
    """The whole comparison; one table (and openai_runners.json) with every tool's row."""
    with contextlib.ExitStack() as stack:
        if venvs is None:
            venvs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="batchgpt-venvs-")))
        venvs.mkdir(parents=True, exist_ok=True)
        print("installing the tools ...", flush=True)
        curator = curator_tool(venvs)
        tools = [
            bare_tool(),
            batchgpt_tool(),
            curator,
            prompto_tool(venvs),
            cookbook_tool(cookbook, curator, venvs),
        ]
        bench = Bench(tools, work, venvs)
        print("calibrating (1,000 prompts, zero latency) ...", flush=True)
        speeds = calibrate(bench)
        print("zero latency ...", flush=True)
        fast = throughput(bench, sizes(speeds, 10_000, 120), 3, 0.0, UNLIMITED_PER_MINUTE)
        print("200 ms latency, 32 in flight ...", flush=True)
        slow_counts = sizes(speeds, 3200, 120, ceiling=CONCURRENCY / 0.2)
        slow = throughput(bench, slow_counts, 1, 0.2, int(CONCURRENCY / 0.2 * 60))
        print("peak RSS, 100,000 prompts ...", flush=True)
        rss = memory(bench, sizes(speeds, 100_000, 600))
        print("kill -9 three times, then rerun ...", flush=True)
        kills = kill_and_rerun(bench, sizes(speeds, 2000, 60, ceiling=CONCURRENCY / 0.05), 3, 0.05)
    bare = fast.get("bare curl_cffi loop", {}).get("prompts/s")
    rows = []
    for tool in tools:
        speed, slow_speed = fast.get(tool.name, {}), slow.get(tool.name, {})
        ratio = speed["prompts/s"] / bare if bare and "prompts/s" in speed else None
        rows.append(
            {
                "tool": tool.name,
                "version": tool.version,
                "0 ms: prompts/s": _cell(speed, "prompts/s", 10_000),
                "vs bare": "–" if ratio is None else f"{ratio:.2f}x",
                "200 ms, 32 in flight: prompts/s": _cell(slow_speed, "prompts/s", 3200),
                "peak RSS MB (100k)": _cell(rss.get(tool.name, {}), "peak RSS MB", 100_000),
                "after 3x kill -9 + rerun": kills.get(tool.name, "–"),
                "notes": f"not run: {tool.unavailable}"
                if tool.unavailable
                else "; ".join(tool.notes),
            }
        )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    (out / "openai_runners.raw.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "openai_runners.raw.json").write_text(
        json.dumps(
            {"date": stamp, "fast": fast, "slow": slow, "rss": rss, "kills": kills}, indent=2
        )
    )
    print(f"\n{stamp}")
    report("openai_runners", rows, out)
