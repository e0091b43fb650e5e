"""`batchgpt run --provider openai` end to end: the real CLI in subprocesses against the
OpenAI-compatible emulator served from this process, so its counters see every request.

Every line shape with its own model and parameters, the key from the environment only and never
shown, a refused key stopping the run at once, retries and final errors as records, kill -9 and
resume exactly once, `--format openai` bodies the SDK parses, usage in the summary and the report,
and `--tpm` over the whole run.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from openai.types.chat import ChatCompletion
from openai_support import (
    KEY,
    RunningOpenAIEmulator,
    answers_by_id,
    chat_prompts,
    id_of,
    messages_of,
    openai_emulator,
    openai_run_args,
    write_lines,
)
from support import (
    CLI,
    batchgpt,
    cli_env,
    complete_lines,
    finish,
    read_results,
    spawn_fixture,
    wait_for,
)

from batchgpt.emulator.openai import BAD_REQUEST_MESSAGE
from batchgpt.providers.openai import estimate_tokens
from batchgpt.report import write_report

__all__ = ["openai_emulator", "spawn_fixture"]

pytestmark = pytest.mark.openai_config(api_key=KEY)


def key_env(key: str = KEY, variable: str = "OPENAI_API_KEY") -> dict[str, str]:
    env = cli_env(**{variable: key})
    env.pop("BATCHGPT_API_KEY" if variable == "OPENAI_API_KEY" else "OPENAI_API_KEY", None)
    return env


def run(
    input_path: Path, url: str, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    done = batchgpt(openai_run_args(input_path, url, *extra), env=env or key_env())
    return done.returncode, done.stdout, done.stderr


def assert_no_key_anywhere(folder: Path, *texts: str) -> None:
    for text in texts:
        assert KEY not in text
    for path in folder.iterdir():
        assert KEY.encode() not in path.read_bytes(), path


def test_every_line_is_sent_as_given_and_answered_with_its_usage(
    openai_emulator: RunningOpenAIEmulator, tmp_path: Path
) -> None:
    lines = chat_prompts(30)
    input_path = write_lines(tmp_path / "chat.jsonl", lines)
    code, _, err = run(input_path, openai_emulator.url, "--concurrency", "4")
    assert code == 0, err
    results = {r["id"]: r for r in read_results(tmp_path / "chat.results.jsonl")}
    assert {r: v["response"] for r, v in results.items()} == answers_by_id(lines)
    sent = {json.dumps(body["messages"]): body for body in openai_emulator.stats.bodies}
    assert len(sent) == 30
    for line in lines:
        body = sent[json.dumps(messages_of(line))]  # system messages and history as given
        own = line.get("model", line.get("body", {}).get("model"))
        assert body["model"] == (own or "gpt-4o")  # a line's own model wins
        assert results[id_of(line)]["model"] == body["model"]
        if "body" in line:  # the other body fields are passed through
            assert body["temperature"] == 0.25 and body["seed"] == line["body"]["seed"]
        else:
            assert set(body) == {"model", "messages"}
    served = sum(tokens for _, tokens in openai_emulator.stats.tokens)
    assert sum(r["usage"]["total_tokens"] for r in results.values()) == served
    assert f"tokens: {served:,} (" in err and "tokens/s" in err and "per prompt" in err
    assert openai_emulator.stats.authorizations == [f"Bearer {KEY}"] * 30


def test_batchgpt_api_key_wins_over_openai_api_key(
    openai_emulator: RunningOpenAIEmulator, tmp_path: Path
) -> None:
    input_path = write_lines(tmp_path / "p.jsonl", chat_prompts(3))
    env = cli_env(BATCHGPT_API_KEY=KEY, OPENAI_API_KEY="sk-not-this-one")
    code, _, err = run(input_path, openai_emulator.url, env=env)
    assert code == 0, err
    assert set(openai_emulator.stats.authorizations) == {f"Bearer {KEY}"}


def test_the_key_is_no_flag_and_never_shown(
    openai_emulator: RunningOpenAIEmulator, tmp_path: Path
) -> None:
    input_path = write_lines(tmp_path / "p.jsonl", chat_prompts(3))
    refused = batchgpt(openai_run_args(input_path, openai_emulator.url, "--api-key", KEY))
    assert refused.returncode == 2 and "No such option '--api-key'" in refused.stderr
    assert KEY not in refused.stderr
    code, out, err = run(input_path, openai_emulator.url, "--dry-run")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["api_key"] == "set" and shown["provider"] == "openai"
    help_text = batchgpt([*CLI, "run", "--help"]).stdout
    assert "BATCHGPT_API_KEY or OPENAI_API_KEY" in help_text
    code, _, err = run(input_path, openai_emulator.url, "-vv", "--log-format", "json")
    assert code == 0, err
    assert_no_key_anywhere(tmp_path, out, err)


def test_a_refused_key_stops_the_run_at_once_with_nothing_written(
    openai_emulator: RunningOpenAIEmulator, tmp_path: Path
) -> None:
    """The server echoes the wrong key in full; it reaches neither the message nor any file."""
    input_path = write_lines(tmp_path / "p.jsonl", chat_prompts(60))
    env = key_env("sk-wrong-" + KEY)
    code, out, err = run(input_path, openai_emulator.url, "--concurrency", "4", "-v", env=env)
    assert code == 69, err
    assert "auth: the API refused the key: HTTP 401: Incorrect API key provided: ***" in err
    assert complete_lines(tmp_path / "p.results.jsonl") == 0
    assert 1 <= openai_emulator.stats.requests <= 4  # the requests in flight, not one per prompt
    for path in tmp_path.iterdir():
        assert b"sk-wrong-" not in path.read_bytes(), path
    assert "sk-wrong-" not in out + err
    code, _, err = run(input_path, openai_emulator.url, "--concurrency", "4")  # the right key
    assert code == 0, err
    assert len(read_results(tmp_path / "p.results.jsonl")) == 60


def test_a_spent_quota_stops_the_run_at_once_with_nothing_written(
    openai_emulator: RunningOpenAIEmulator, tmp_path: Path
) -> None:
    openai_emulator.configure(quota_exhausted=True)
    input_path = write_lines(tmp_path / "p.jsonl", chat_prompts(40))
    code, _, err = run(input_path, openai_emulator.url, "--concurrency", "2")
    assert code == 69, err
    assert "quota: the API's quota is used up: HTTP 429" in err
    assert complete_lines(tmp_path / "p.results.jsonl") == 0
    assert 1 <= openai_emulator.stats.requests <= 2


def test_retryable_errors_are_retried_and_final_ones_recorded(
    openai_emulator: RunningOpenAIEmulator, tmp_path: Path
) -> None:
    openai_emulator.configure(rate_limited_first=2, retry_after="1", models="good")
    lines = [
        {"id": "ok1", "prompt": "first", "model": "good"},
        {"id": "ok2", "prompt": "second", "model": "good"},
        {"id": "unknown", "prompt": "third", "model": "missing-model"},
        {"id": "refused", "prompt": "[bad-request] fourth", "model": "good"},
    ]
    input_path = write_lines(tmp_path / "p.jsonl", lines)
    code, _, err = run(input_path, openai_emulator.url, "--concurrency", "1")
    assert code == 1, err
    results = {r["id"]: r for r in read_results(tmp_path / "p.results.jsonl")}
    assert results["ok1"]["status"] == "ok" and results["ok1"]["attempts"] == 3
    assert results["ok2"]["attempts"] == 1
    times = openai_emulator.stats.request_times
    assert times[1] - times[0] >= 1.0 and times[2] - times[1] >= 1.0  # Retry-After honoured
    assert results["unknown"]["error"] == {
        "kind": "not_found",
        "message": "HTTP 404: The model `missing-model` does not exist or you do not have "
        "access to it.",
        "http_status": 404,
        "retryable": False,
    }
    assert results["refused"]["error"]["kind"] == "bad_request"
    assert results["refused"]["error"]["message"] == f"HTTP 400: {BAD_REQUEST_MESSAGE}"
    assert results["refused"]["attempts"] == 1


def test_kill_9_three_times_then_resume_answers_every_line_once(
    openai_emulator: RunningOpenAIEmulator, tmp_path: Path, spawn
) -> None:
    openai_emulator.configure(latency=0.02)
    lines = chat_prompts(400)
    input_path = write_lines(tmp_path / "p.jsonl", lines)
    output = tmp_path / "p.results.jsonl"
    args = openai_run_args(input_path, openai_emulator.url, "--concurrency", "8")
    for kill in range(3):
        process = spawn(args, env=key_env())
        target = 60 * (kill + 1)
        assert wait_for(lambda: complete_lines(output) >= target, 60), finish(process)  # noqa: B023
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    assert complete_lines(output) < 400
    code, _, err = finish(spawn(args, env=key_env()))
    assert code == 0, err
    results = read_results(output)
    assert sorted(r["id"] for r in results) == sorted(id_of(line) for line in lines)
    expected = answers_by_id(lines)
    assert all(r["response"] == expected[r["id"]] for r in results)
    redone = openai_emulator.stats.answers - 400
    assert 0 <= redone <= 3 * 8  # only the requests in flight at each kill


def test_openai_format_carries_the_servers_body_and_the_sdk_parses_it(
    openai_emulator: RunningOpenAIEmulator, tmp_path: Path
) -> None:
    lines = chat_prompts(12)
    input_path = write_lines(tmp_path / "p.jsonl", lines)
    code, _, err = run(input_path, openai_emulator.url, "--format", "openai")
    assert code == 0, err
    expected = answers_by_id(lines)
    records = read_results(tmp_path / "p.results.jsonl")
    assert len(records) == 12
    for record in records:
        completion = ChatCompletion.model_validate(record["response"]["body"])
        assert completion.id.startswith("chatcmpl-emu")  # the server's own id
        assert completion.system_fingerprint == "fp_emulator"
        assert completion.choices[0].message.content == expected[record["custom_id"]]
        assert completion.usage is not None and completion.usage.total_tokens > 0


def test_the_report_sums_the_tokens(openai_emulator: RunningOpenAIEmulator, tmp_path: Path) -> None:
    input_path = write_lines(tmp_path / "p.jsonl", chat_prompts(20))
    code, _, err = run(input_path, openai_emulator.url)
    assert code == 0, err
    summary = write_report([tmp_path / "p.results.jsonl"], tmp_path / "report.html")
    tokens = sum(tokens for _, tokens in openai_emulator.stats.tokens)
    assert summary.tokens == tokens and summary.with_usage == 20
    assert summary.tokens_per_prompt == pytest.approx(tokens / 20)
    page = (tmp_path / "report.html").read_text()
    assert f'<dd id="total-tokens">{tokens:,}</dd>' in page
    assert 'id="tokens-per-second"' in page and 'id="tokens-per-prompt"' in page


def test_tpm_holds_the_whole_run_to_its_budget(
    openai_emulator: RunningOpenAIEmulator, tmp_path: Path
) -> None:
    """Four workers on two sessions share one budget of 3,000 tokens a minute. Every answer
    costs more than its estimate, so each request takes at least its estimate: the last one
    cannot go out before everything beyond one bucket has leaked out at 50 tokens a second."""
    openai_emulator.configure(extra_completion_tokens=250)
    lines = [{"id": f"t{n}", "prompt": f"tokens please {n}"} for n in range(12)]
    input_path = write_lines(tmp_path / "p.jsonl", lines)
    estimate = {id_of(line): estimate_tokens(messages_of(line), None) for line in lines}
    assert sum(estimate.values()) - 3000 >= 100
    started = time.monotonic()
    code, _, err = run(
        input_path, openai_emulator.url, "--tpm", "3000", "--concurrency", "4", "--sessions", "2"
    )
    assert code == 0, err
    for record in read_results(tmp_path / "p.results.jsonl"):
        assert record["usage"]["total_tokens"] >= estimate[record["id"]]
    last = max(openai_emulator.stats.request_times)
    assert last - started >= (sum(estimate.values()) - 3000) / 50


def test_a_job_file_cannot_hold_the_key(
    openai_emulator: RunningOpenAIEmulator, tmp_path: Path
) -> None:
    write_lines(tmp_path / "p.jsonl", chat_prompts(2))
    job = tmp_path / "job.toml"
    settings = f'input = "p.jsonl"\nprovider = "openai"\nbase_url = "{openai_emulator.url}"\n'
    job.write_text(settings + f'api_key = "{KEY}"\n')
    done = batchgpt([*CLI, "run", str(job), "--no-progress"], env=key_env())
    assert done.returncode == 2 and "unknown key 'api_key'" in done.stderr
    assert KEY not in done.stderr + done.stdout
    assert openai_emulator.stats.requests == 0
    job.write_text(settings + "tpm = 100000\n")
    done = batchgpt([*CLI, "run", str(job), "--no-progress"], env=key_env())
    assert done.returncode == 0, done.stderr
    assert openai_emulator.stats.answers == 2
