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

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from support import (
    ForwardProxy,
    RequestSampler,
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

from batchgpt.emulator import expected_answer, max_in_window


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


@pytest.mark.parametrize("concurrency", [1, 16])
def test_rate_holds_in_every_one_second_window(emulator, tmp: Path, concurrency: int) -> None:
    lines = mixed_prompts(120)
    prompts = write_jsonl(tmp / "prompts.jsonl", lines)

    started = time.monotonic()
    done = run_job(prompts, emulator.url, "--rate", "20", "--concurrency", str(concurrency))
    elapsed = time.monotonic() - started

    assert done.returncode == 0, done.stderr
    check_answers(lines, read_results(tmp / "prompts.results.jsonl"))
    assert emulator.stats.posts == 120
    assert max_in_window(emulator.stats.post_times) <= 20
    assert 5.0 <= elapsed <= 10.0


@pytest.mark.emulator_config(latency=0.2)
@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_is_never_exceeded(emulator, tmp: Path, concurrency: int) -> None:
    lines = mixed_prompts(5 * concurrency + 2)
    prompts = write_jsonl(tmp / "prompts.jsonl", lines)

    done = run_job(prompts, emulator.url, "--concurrency", str(concurrency))

    assert done.returncode == 0, done.stderr
    check_answers(lines, read_results(tmp / "prompts.results.jsonl"))
    assert emulator.stats.max_in_flight == concurrency


@pytest.mark.emulator_config(down=True)
def test_breaker_slows_down_then_stops_with_69_and_leaves_prompts_for_the_next_run(
    emulator, tmp: Path
) -> None:
    lines = mixed_prompts(40)
    prompts = write_jsonl(tmp / "prompts.jsonl", lines)
    output = tmp / "prompts.results.jsonl"

    with RequestSampler(lambda: emulator.stats) as sampler:
        done = run_job(prompts, emulator.url, "--give-up-after", "6", "--concurrency", "4")
        ended = time.monotonic()

    assert done.returncode == 69, done.stderr
    assert done.stdout == ""
    assert "unreachable" in done.stderr
    assert read_results(output) == [], "unreached prompts must not be recorded as errors"
    first = sampler.first_request_at()
    early = sampler.count_at(first + 2.0)
    late = sampler.count_at(ended) - sampler.count_at(ended - 2.0)
    total = sampler.count_at(ended)
    assert early >= 5
    assert late <= 2 and late < early, (early, late)
    # Without a breaker 4 workers would send 6 attempts per prompt, one prompt after another.
    assert total <= 15

    emulator.configure(down=False)
    again = run_job(prompts, emulator.url, "--give-up-after", "6")
    assert again.returncode == 0, again.stderr
    check_answers(lines, read_results(output))


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


def assert_halted_at_once(done, output: Path, answer: str, requests: int) -> None:
    """Exit 69 naming the site's answer, after a handful of requests, nothing written."""
    assert done.returncode == 69, done.stderr
    assert answer in done.stderr
    assert "left for the next run" in done.stderr
    assert read_results(output) == [], "prompts of a broken site must not be written as errors"
    assert requests <= 12, f"{requests} requests to a site that answers every one the same way"


HALT_PROMPTS = 10_000


@pytest.mark.emulator_config(nonce_markup="none")
def test_a_page_without_a_chat_stops_a_10000_prompt_run_after_a_handful_of_requests(
    emulator, tmp: Path
) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    write_prompts(prompts, HALT_PROMPTS)

    done = run_job(prompts, emulator.url, "--concurrency", "4")

    requests = emulator.stats.gets + emulator.stats.posts
    assert_halted_at_once(done, output, f"no_nonce: no chat nonce on {emulator.url}", requests)


def test_a_site_that_answers_400_0_stops_a_10000_prompt_run_after_a_handful_of_requests(
    emulator, tmp: Path
) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    ids = write_prompts(prompts, HALT_PROMPTS)
    with running_proxy(ChangedSite(emulator.url)) as (site, url):
        done = run_job(prompts, url, "--concurrency", "4")
        requests = site.requests + site.posts

    assert_halted_at_once(done, output, "admin-ajax answered 400 '0'", requests)
    assert emulator.stats.posts == 0

    report = json.loads(run_cli("status", prompts, "--json").stdout)  # all left for a rerun
    assert (report["done"], report["remaining"]) == (0, len(ids))
