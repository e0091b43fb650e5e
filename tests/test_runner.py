"""The whole pipeline end to end (issue #3): the real CLI in a subprocess against the emulator.

Hundreds of prompts in every input shape come back exactly once each, with the answer to their own
message; nonces are reused and re-scraped transparently; every transient fault ends in an answer
while final ones end as error records; --rate and --concurrency hold as seen by the site; and a site
that stays down trips the breaker, which slows the requests and stops the run with exit 69 without
recording the unreached prompts, so the next run answers them. A site that would refuse every
prompt (no chat on the page, 400 "0") stops a 10,000-prompt run the same way after a handful of
requests.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from fake_clock import VirtualTimeLoop, real_sleep
from support import (
    BOTH_CHATS,
    CLI,
    ForwardProxy,
    batchgpt,
    line_id,
    mixed_prompts,
    read_results,
    run_cli,
    run_job,
    running_proxy,
    sent_message,
    write_jsonl,
    write_prompts,
)

from batchgpt.config import RunConfig
from batchgpt.emulator import (
    Emulator,
    EmulatorConfig,
    expected_answer,
    max_in_window,
    running_emulator,
)
from batchgpt.pacing import HEADROOM
from batchgpt.runner import Runner, RunOutcome


def check_answers(
    lines: list[dict[str, Any]], results: list[dict[str, Any]], *, failing: set[Any] = frozenset()
) -> None:
    """Every input line has exactly one result, at its own line, answering its own message."""
    by_id = {line_id(obj, number): (number, obj) for number, obj in enumerate(lines, start=1)}
    ids = [result["id"] for result in results]
    assert len(ids) == len(set(ids)), "an id was written twice"
    assert set(ids) == set(by_id)
    for result in results:
        number, obj = by_id[result["id"]]
        assert result["line"] == number
        if result["id"] in failing:
            continue
        assert result["status"] == "ok", result
        assert result["response"] == expected_answer(sent_message(obj)), result["id"]
        assert result["attempts"] >= 1


class NonceRotator:
    """Invalidates every nonce the emulator handed out, every `every` seconds, from a thread."""

    def __init__(self, emulator: Any, every: float) -> None:
        self.emulator = emulator
        self.every = every
        self.rotations = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rotator", daemon=True)

    def _run(self) -> None:
        while not self._done.wait(self.every):
            self.emulator.emu.rotate_nonces()
            self.rotations += 1

    def __enter__(self) -> NonceRotator:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join(5)


@BOTH_CHATS
@pytest.mark.emulator_config(latency=0.01)
def test_hundreds_of_mixed_prompts_come_back_once_each_with_their_own_answer(
    emulator, tmp: Path
) -> None:
    lines = mixed_prompts(300)
    prompts = write_jsonl(tmp / "prompts.jsonl", lines)

    done = run_job(prompts, emulator.url, "--concurrency", "8")

    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "this run: 300 results (300 ok)" in done.stderr
    assert "output: 300 ok, 0 errors" in done.stderr
    results = read_results(tmp / "prompts.results.jsonl")
    assert len(results) == 300
    check_answers(lines, results)
    models = {result["id"]: result["model"] for result in results}
    assert models["p0"] == "gpt-4o" and models["p1"] == "gpt-4o-mini" and models["p2"] == "gpt-4"
    stats = emulator.stats
    assert stats.posts == 300
    assert stats.answers == 300
    assert set(stats.answered) == {sent_message(obj) for obj in lines}
    assert all(count == 1 for count in stats.answered.values())
    assert stats.gets <= 4 + 2, "the nonce must be scraped once per session and reused"
    assert stats.nonce_failures == 0


@BOTH_CHATS
@pytest.mark.emulator_config(latency=0.05, nonce_life=2.0)
def test_nonce_rotation_mid_run_is_handled_transparently(emulator, tmp: Path) -> None:
    lines = mixed_prompts(300)
    prompts = write_jsonl(tmp / "prompts.jsonl", lines)

    with NonceRotator(emulator, every=0.6) as rotator:
        done = run_job(prompts, emulator.url, "--concurrency", "6")

    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    results = read_results(tmp / "prompts.results.jsonl")
    check_answers(lines, results)
    stats = emulator.stats
    assert rotator.rotations >= 2
    assert stats.nonce_failures >= 1, "the nonces never went stale: the test proves nothing"
    assert stats.answers == 300
    # Each rejected nonce costs one repeated POST and at most one scrape per session, no more.
    assert stats.posts == 300 + stats.nonce_failures
    assert stats.gets <= 4 + stats.nonce_failures
    assert stats.gets < stats.posts / 5, "nonces must be reused between rotations"
    assert sum(result["attempts"] for result in results) <= 300 + 10


@BOTH_CHATS
@pytest.mark.emulator_config(
    error_rate=0.1,
    hang_rate=0.04,
    hang_seconds=2.5,
    truncate_rate=0.1,
    rate_limit=25,
    retry_after="1",
    nonce_life=2.0,
)
def test_every_transient_fault_ends_in_an_answer_and_captcha_in_an_error(
    emulator, tmp: Path
) -> None:
    lines = mixed_prompts(60)
    captcha_ids = set()
    for n in range(0, 54, 9):  # prompt-shaped lines (n % 3 == 0)
        lines[n]["prompt"] = f"[captcha] please {n}"
        captcha_ids.add(lines[n]["id"])
    prompts = write_jsonl(tmp / "prompts.jsonl", lines)

    with NonceRotator(emulator, every=1.5):
        done = run_job(
            prompts, emulator.url, "--concurrency", "8", "--timeout", "1", "--retries", "12"
        )

    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    results = read_results(tmp / "prompts.results.jsonl")
    check_answers(lines, results, failing=captcha_ids)
    for result in results:
        if result["id"] in captcha_ids:
            assert result["status"] == "error"
            assert result["response"] is None
            assert result["error"]["kind"] == "captcha"
            assert result["error"]["retryable"] is False
            assert "Kästchen" in result["error"]["message"]
    assert "output: 54 ok, 6 errors (captcha 6)" in done.stderr
    stats = emulator.stats
    server_errors = sum(stats.status[code] for code in (500, 502, 503, 520))
    assert server_errors > 0 and stats.status[429] > 0
    assert sum(result["attempts"] for result in results) > len(results), "no fault was retried"
    assert {sent_message(obj) for obj in lines} - set(stats.answered) == {
        sent_message(obj) for obj in lines if obj.get("id") in captcha_ids
    }


@BOTH_CHATS
@pytest.mark.parametrize("concurrency", [1, 16])
def test_rate_holds_in_every_one_second_window(emulator, tmp: Path, concurrency: int) -> None:
    lines = mixed_prompts(60)
    prompts = write_jsonl(tmp / "prompts.jsonl", lines)

    done = run_job(prompts, emulator.url, "--rate", "20", "--concurrency", str(concurrency))

    assert done.returncode == 0, done.stderr
    check_answers(lines, read_results(tmp / "prompts.results.jsonl"))
    posts = emulator.stats.post_times  # when the site received each POST
    assert len(posts) == 60
    assert max_in_window(posts) <= 20
    # Paced evenly at the rate, as the site saw it: no faster (the ceiling above, and no burst
    # at start), and not much slower (the pacer's exact spacing is test_pacing's, on a fake clock).
    interval = HEADROOM / 20
    assert 59 * interval - 0.1 <= posts[-1] - posts[0] <= 59 * interval * 1.5


@BOTH_CHATS
@pytest.mark.emulator_config(latency=0.2)
@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_is_never_exceeded(emulator, tmp: Path, concurrency: int) -> None:
    lines = mixed_prompts(5 * concurrency + 2)
    prompts = write_jsonl(tmp / "prompts.jsonl", lines)

    done = run_job(prompts, emulator.url, "--concurrency", str(concurrency))

    assert done.returncode == 0, done.stderr
    check_answers(lines, read_results(tmp / "prompts.results.jsonl"))
    assert emulator.stats.max_in_flight == concurrency


@BOTH_CHATS
@pytest.mark.emulator_config(down=True)
def test_breaker_slows_down_then_stops_with_69_and_leaves_prompts_for_the_next_run(
    emulator, tmp: Path
) -> None:
    lines = mixed_prompts(40)
    prompts = write_jsonl(tmp / "prompts.jsonl", lines)
    output = tmp / "prompts.results.jsonl"

    done = run_job(prompts, emulator.url, "--give-up-after", "4", "--concurrency", "4")

    assert done.returncode == 69, done.stderr
    assert done.stdout == ""
    assert read_results(output) == [], "unreached prompts must not be recorded as errors"
    down = re.search(r"unreachable for (\d+) s \(--give-up-after 4\)", done.stderr)
    assert down and int(down[1]) >= 4, done.stderr
    requests = emulator.stats.requests
    # The breaker opens after 5 failures in a row, then probes once per cooldown (1, 2 s:
    # test_retry's fake clock pins the schedule). Without it 4 workers would send 6 attempts per
    # prompt, one prompt after another, for the 4 s the site was down.
    assert 5 <= requests <= 15

    emulator.configure(down=False)
    again = run_job(prompts, emulator.url, "--give-up-after", "4")
    assert again.returncode == 0, again.stderr
    check_answers(lines, read_results(output))


# a 0 that means something -----------------------------------------------------------------------


@pytest.mark.emulator_config(truncate_rate=1.0)
def test_retries_0_makes_one_attempt_per_prompt(emulator, tmp: Path) -> None:
    lines = mixed_prompts(8)
    prompts = write_jsonl(tmp / "prompts.jsonl", lines)

    done = run_job(prompts, emulator.url, "--retries", "0", "--give-up-after", "1000")

    assert done.returncode == 1, done.stderr
    results = read_results(tmp / "prompts.results.jsonl")
    assert len(results) == 8
    assert {(r["error"]["kind"], r["error"]["retryable"], r["attempts"]) for r in results} == {
        ("bad_response", True, 1)
    }
    assert emulator.stats.posts == 8


def test_rate_0_on_the_command_line_lifts_a_job_files_rate(emulator, tmp: Path) -> None:
    lines = mixed_prompts(16)
    write_jsonl(tmp / "prompts.jsonl", lines)
    job = tmp / "job.toml"
    job.write_text(f'input = "prompts.jsonl"\nrate = "1/s"\nbase_url = "{emulator.url}"\n')

    done = batchgpt([*CLI, "run", str(job), "--rate", "0", "--no-progress"])

    assert done.returncode == 0, done.stderr
    check_answers(lines, read_results(tmp / "prompts.results.jsonl"))
    assert max_in_window(emulator.stats.post_times) > 1  # not paced at the job file's 1/s


# the runner as a library ------------------------------------------------------------------------

LIBRARY_CALLER = """
import json, signal, sys
import batchgpt

def mine(signum, frame):
    pass

handled = (signal.SIGINT, signal.SIGTERM, signal.SIGXFSZ)
for sig in handled:
    signal.signal(sig, mine)
before = [signal.getsignal(sig) is mine for sig in handled]
config = batchgpt.RunConfig.build({"input": sys.argv[1], "base_url": sys.argv[2]})
outcome = batchgpt.run(config)
after = [signal.getsignal(sig) is mine for sig in handled]
print(json.dumps({"exit": outcome.exit_code, "before": before, "after": after}))
"""


def test_run_as_a_library_leaves_the_callers_signal_handlers_alone(emulator, tmp: Path) -> None:
    lines = mixed_prompts(6)
    prompts = write_jsonl(tmp / "prompts.jsonl", lines)

    done = batchgpt([sys.executable, "-c", LIBRARY_CALLER, str(prompts), emulator.url])

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "exit": 0,
        "before": [True, True, True],
        "after": [True, True, True],
    }
    check_answers(lines, read_results(tmp / "prompts.results.jsonl"))
    # `batchgpt run` still drains on SIGTERM: test_crash.py's signal tests.


# the drain deadline, in virtual time ------------------------------------------------------------

#: How long the slow site takes to answer, in real time: far longer than any scenario below.
LATENCY = 2.0


@pytest.fixture(scope="module")
def slow_site() -> Iterator[tuple[str, Emulator]]:
    """One emulator for the drain tests, so its unanswered requests are waited for once."""
    with running_emulator(EmulatorConfig(latency=LATENCY)) as (emu, url):
        yield url, emu


async def started_run(
    site: tuple[str, Emulator], tmp: Path, drain_timeout: float
) -> tuple[Runner, asyncio.Task[RunOutcome]]:
    """A run of 20 prompts with its first two requests in flight at the slow site."""
    url, emu = site
    prompts = tmp / "prompts.jsonl"
    write_prompts(prompts, 20)
    config = RunConfig.build(
        {"input": prompts, "base_url": url, "concurrency": 2, "drain_timeout": drain_timeout}
    )
    runner = Runner(config)
    posts = emu.stats.posts
    task = asyncio.create_task(runner.run())
    for _ in range(1000):
        if emu.stats.posts >= posts + 2:
            return runner, task
        await real_sleep(0.01)
    raise AssertionError("the run never had two requests in flight")


async def ends_within_real(task: asyncio.Task[RunOutcome], seconds: float) -> bool:
    """Whether `task` ends within `seconds` of real time (the loop's clock standing still)."""
    for _ in range(int(seconds / 0.01)):
        if task.done():
            return True
        await real_sleep(0.01)
    return task.done()


def in_virtual_time(scenario: Callable[[VirtualTimeLoop], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        loop = runner.get_loop()
        assert isinstance(loop, VirtualTimeLoop)
        runner.run(scenario(loop))


def test_a_stop_cuts_requests_in_flight_exactly_at_the_drain_deadline(
    slow_site, tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    output = tmp / "prompts.results.jsonl"

    async def scenario(loop: VirtualTimeLoop) -> None:
        runner, task = await started_run(slow_site, tmp, drain_timeout=20)
        runner.stop("SIGTERM")
        loop.advance(19.9)
        assert not await ends_within_real(task, 0.2)  # 0.1 s of the drain left
        loop.advance(0.1)
        assert await ends_within_real(task, 10)
        assert (task.result().exit_code, task.result().stopped_by) == (143, "SIGTERM")

    in_virtual_time(scenario)
    assert read_results(output) == [], "the requests in flight were cut, not answered"
    assert "the drain deadline passed" in caplog.text


def test_a_second_stop_never_moves_the_deadline_later(slow_site, tmp: Path) -> None:
    async def scenario(loop: VirtualTimeLoop) -> None:
        runner, task = await started_run(slow_site, tmp, drain_timeout=20)
        runner.stop("SIGTERM")
        loop.advance(15)
        runner.stop("SIGTERM")  # from now it would end at 35 s
        loop.advance(4.9)
        assert not await ends_within_real(task, 0.2)
        loop.advance(0.1)
        assert await ends_within_real(task, 10)
        assert task.result().exit_code == 143

    in_virtual_time(scenario)
    assert read_results(tmp / "prompts.results.jsonl") == []


def test_drain_timeout_0_cuts_at_once(slow_site, tmp: Path) -> None:
    async def scenario(loop: VirtualTimeLoop) -> None:
        runner, task = await started_run(slow_site, tmp, drain_timeout=0)
        runner.stop("SIGINT")
        assert await ends_within_real(task, 10)  # without the clock moving at all
        assert task.result().exit_code == 130

    in_virtual_time(scenario)
    assert read_results(tmp / "prompts.results.jsonl") == []


# site-level failures stop the run ------------------------------------------------------------


class ChangedSite(ForwardProxy):
    """The emulator's pages behind a site whose chat action is gone: every POST is answered
    400 "0", as WordPress's admin-ajax.php answers an action it no longer knows."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.posts = 0

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "POST":
            self.posts += 1
            return web.Response(status=400, text="0")
        return await super().handle(request)


def assert_halted_at_once(done, output: Path, answer: str, requests: int, most: int = 12) -> None:
    """Exit 69 naming the site's answer, after a handful of requests, nothing written."""
    assert done.returncode == 69, done.stderr
    assert answer in done.stderr
    assert "left for the next run" in done.stderr
    assert read_results(output) == [], "prompts of a broken site must not be written as errors"
    assert requests <= most, f"{requests} requests to a site that answers every one the same way"


HALT_PROMPTS = 10_000


@pytest.mark.emulator_config(chat="legacy", nonce_markup="none")
def test_a_page_without_a_chat_stops_a_10000_prompt_run_after_a_handful_of_requests(
    emulator, tmp: Path
) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    write_prompts(prompts, HALT_PROMPTS)

    done = run_job(prompts, emulator.url, "--concurrency", "4")

    requests = emulator.stats.gets + emulator.stats.posts
    assert_halted_at_once(done, output, f"no_nonce: no chat on {emulator.url}", requests)


def test_a_site_that_answers_400_0_stops_a_10000_prompt_run_after_a_handful_of_requests(
    emulator, tmp: Path
) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    ids = write_prompts(prompts, HALT_PROMPTS)
    with running_proxy(ChangedSite(emulator.url)) as (site, url):
        done = run_job(prompts, url, "--concurrency", "4")
        requests = site.requests + site.posts

    # Each 400 "0" has the page read again (PROTOCOL.md §C1: the site may have switched chat):
    # four sessions' first pages, then a POST and a page for each of the three failures that
    # halt and of the up to four in flight.
    assert_halted_at_once(done, output, "admin-ajax answered 400 '0'", requests, 4 + 2 * 7)
    assert emulator.stats.posts == 0

    report = json.loads(run_cli("status", prompts, "--json").stdout)  # all left for a rerun
    assert (report["done"], report["remaining"]) == (0, len(ids))
