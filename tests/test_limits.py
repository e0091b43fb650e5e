"""Limits are respected, never evaded (PROTOCOL.md §C5), through the real CLI against the emulator.

A quota or token-limit answer stops dispatch at once: what was answered is written, the refused and
unsent prompts are left for the next run (never written as errors) and the run exits 69 naming the
site's message. The guest id is one per proxy for the whole run. A banned IP benches its proxy;
every proxy banned (the direct connection is one) stops the run the same way.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import (
    BOTH_CHATS,
    CLI,
    ForwardProxy,
    assert_exactly_once,
    batchgpt,
    read_results,
    run_args,
    running_proxy,
    write_prompts,
)


@BOTH_CHATS
@pytest.mark.parametrize("concurrency", ["1", "4"])
def test_a_quota_on_prompt_31_stops_the_run_and_the_next_day_sends_exactly_the_70_others(
    emulator, tmp: Path, concurrency: str
) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    ids = write_prompts(prompts, 100)
    emulator.configure(guest_quota=30)
    args = run_args(prompts, emulator.url, "--concurrency", concurrency)

    first = batchgpt(args)

    assert first.returncode == 69, first.stderr
    assert "quota" in first.stderr or "token limit" in first.stderr
    assert "left for the next run" in first.stderr
    written = read_results(output)
    assert len(written) == 30 and all(r["status"] == "ok" for r in written)
    answered_first = emulator.stats.answers
    assert answered_first == 30
    refused = emulator.stats.posts - 30
    assert 1 <= refused <= int(concurrency), "dispatch must stop at the first refusal"

    emulator.configure(guest_quota=0)  # the next day: a new quota period
    posts_before = emulator.stats.posts
    again = batchgpt(args)

    assert again.returncode == 0, again.stderr
    assert emulator.stats.posts - posts_before == 70
    assert emulator.stats.answers - answered_first == 70
    assert_exactly_once(output, ids)


@pytest.mark.emulator_config(chat="aipkit")
def test_the_guest_id_is_one_per_proxy_for_the_whole_run(emulator, tmp: Path) -> None:
    prompts = tmp / "prompts.jsonl"
    ids = write_prompts(prompts, 40)
    with running_proxy() as (_a, first), running_proxy() as (_b, second):
        done = batchgpt(
            run_args(
                prompts,
                emulator.url,
                "--sessions",
                "4",
                "--concurrency",
                "8",
                "--proxy",
                first,
                "--proxy",
                second,
            )
        )
    assert done.returncode == 0, done.stderr
    assert_exactly_once(tmp / "prompts.results.jsonl", ids)
    guests = emulator.stats.guests
    assert len(guests) == 2, guests  # four sessions, two proxies: two guests, never more
    assert sum(guests.values()) == 40
    assert len({q["conversation_uuid"] for q in emulator.stats.queries}) == 40

    more = tmp / "more.jsonl"
    write_prompts(more, 10, prefix="m")
    assert batchgpt(run_args(more, emulator.url, "--sessions", "3")).returncode == 0
    assert len(emulator.stats.guests) == 3  # the direct connection is one more guest


@BOTH_CHATS
def test_a_banned_proxy_is_benched_and_the_others_carry_the_run(emulator, tmp: Path) -> None:
    prompts = tmp / "prompts.jsonl"
    ids = write_prompts(prompts, 30)
    emulator.configure(banned_via="proxy-banned")
    with (
        running_proxy(ForwardProxy(via="proxy-banned")) as (banned, bad),
        running_proxy() as (good, ok),
    ):
        done = batchgpt(
            run_args(prompts, emulator.url, "--sessions", "2", "--proxy", bad, "--proxy", ok)
        )
    assert done.returncode == 0, done.stderr
    assert_exactly_once(tmp / "prompts.results.jsonl", ids)
    # Benched at its first refusal: the page, then at most one prompt per worker in flight then
    # (AIPKit: its cache POST and the refused stream GET).
    assert banned.requests <= 1 + 2 * 4, banned.requests
    assert good.requests >= 30


@BOTH_CHATS
def test_every_proxy_banned_stops_the_run_with_nothing_written(emulator, tmp: Path) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    write_prompts(prompts, 50)
    emulator.configure(banned_via="*")  # without --proxy: the direct connection is banned

    done = batchgpt(run_args(prompts, emulator.url, "--concurrency", "4"))

    assert done.returncode == 69, done.stderr
    assert "banned every proxy" in done.stderr and "blocked" in done.stderr
    assert read_results(output) == []
    assert emulator.stats.posts <= 4


@pytest.mark.emulator_config(chat="aipkit", bots="4,7")
def test_a_named_bot_missing_from_the_page_is_exit_2_with_nothing_created(
    emulator, tmp: Path
) -> None:
    prompts = tmp / "prompts.jsonl"
    write_prompts(prompts, 5)

    done = batchgpt(run_args(prompts, emulator.url, "--bot-id", "9"))

    assert done.returncode == 2, done.stderr
    assert "--bot-id" in done.stderr and "bot 9 is not on" in done.stderr
    assert "bots: 4, 7" in done.stderr
    assert [p.name for p in tmp.iterdir()] == ["prompts.jsonl"]
    assert (emulator.stats.gets, emulator.stats.posts) == (1, 0)

    named = batchgpt(run_args(prompts, emulator.url, "--bot-id", "7"))
    assert named.returncode == 0, named.stderr
    assert {form["bot_id"] for form in emulator.stats.forms} == {"7"}


@pytest.mark.parametrize(("site", "forced"), [("aipkit", "legacy"), ("legacy", "aipkit")])
def test_a_forced_generation_the_site_lacks_stops_the_run(
    emulator, tmp: Path, site: str, forced: str
) -> None:
    prompts, output = tmp / "prompts.jsonl", tmp / "prompts.results.jsonl"
    write_prompts(prompts, 200)
    emulator.configure(chat=site)

    done = batchgpt(run_args(prompts, emulator.url, "--chat", forced))

    assert done.returncode == 69, done.stderr
    assert f"--chat {forced}" in done.stderr and "no_nonce" in done.stderr
    assert read_results(output) == []
    assert emulator.stats.gets <= 8 and emulator.stats.posts == 0

    auto = batchgpt([*CLI, "run", str(prompts), "--base-url", emulator.url, "--no-progress"])
    assert auto.returncode == 0, auto.stderr
