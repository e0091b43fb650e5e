"""Input lines → records, and results → output lines in both formats (issue #5).

Every kind of bad line becomes an `InvalidLine` with its line number and a one-line reason; the
three valid shapes become records that keep everything else as metadata. `--format openai` output
matches the published OpenAI Batch output schema and every answer body parses with the official
SDK; `batchgpt convert` carries ids, lines, answers and error kinds both ways.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion
from support import (
    line_id,
    mixed_prompts,
    read_results,
    run_cli,
    run_job,
    sent_message,
    write_jsonl,
)

from batchgpt.emulator import expected_answer
from batchgpt.errors import INVALID_INPUT
from batchgpt.formats import ErrorInfo, Result, decode_line, decode_outcome, encode
from batchgpt.providers.chatgpt_es.backend import ChatGptEsBackend
from batchgpt.records import InvalidLine, PromptRecord, id_key, parse_line

CHECK_MODEL = ChatGptEsBackend.check_model

BATCH_URL = "/v1/chat/completions"


def batch_line(custom_id: str, messages: list[dict[str, Any]], **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": BATCH_URL,
        "body": {"messages": messages, **body},
    }


def parse(obj: dict[str, Any] | bytes, line: int = 7) -> PromptRecord | InvalidLine:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return parse_line(raw, line, "gpt-4o", CHECK_MODEL)


# valid shapes --------------------------------------------------------------------------------


def test_a_prompt_line_becomes_one_user_message_with_the_default_model() -> None:
    record = parse({"id": "q1", "prompt": "Summarise this"})
    assert isinstance(record, PromptRecord)
    assert (record.id, record.line, record.model) == ("q1", 7, "gpt-4o")
    assert record.messages == [{"role": "user", "content": "Summarise this"}]
    assert record.metadata is None


def test_a_messages_line_keeps_its_messages_model_and_extra_fields() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "!"}],
        },
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Again"},
    ]
    record = parse({"id": 12, "messages": messages, "model": "gpt-4o-mini", "tag": ["a", 1]})
    assert isinstance(record, PromptRecord)
    assert (record.id, record.model, record.messages) == (12, "gpt-4o-mini", messages)
    assert record.metadata == {"tag": ["a", 1]}


def test_a_batch_request_keeps_its_custom_id_and_every_extra_field_in_metadata() -> None:
    obj = batch_line(
        "r-1",
        [{"role": "user", "content": "Hola"}],
        model="gpt-4",
        temperature=0.2,
        max_tokens=50,
    )
    obj["note"] = "kept"
    record = parse(obj)
    assert isinstance(record, PromptRecord)
    assert (record.id, record.model) == ("r-1", "gpt-4")
    assert record.messages == [{"role": "user", "content": "Hola"}]
    assert record.metadata == {"note": "kept", "body": {"temperature": 0.2, "max_tokens": 50}}
    assert set(record.params or {}) == {"temperature", "max_tokens"}


def test_a_line_without_an_id_takes_its_line_number() -> None:
    record = parse({"prompt": "no id"}, line=41)
    assert isinstance(record, PromptRecord)
    assert (record.id, record.line) == (41, 41)


def test_id_key_is_stable_nonzero_and_treats_5_and_text_5_alike() -> None:
    assert id_key(5) == id_key("5")
    assert id_key("a") != id_key("b")
    assert all(0 < id_key(n) < 2**63 for n in range(1000))


# invalid lines ------------------------------------------------------------------------------

USER = [{"role": "user", "content": "hi"}]
BAD_LINES: list[tuple[str, bytes, str]] = [
    ("not JSON", b'{"prompt": "x"', "not JSON"),
    ("trailing garbage", b'{"prompt": "x"} {"prompt": "y"}', "not JSON"),
    ("a list", b'["prompt", "x"]', "not a JSON object"),
    ("a string", b'"hello"', "not a JSON object"),
    ("a number", b"42", "not a JSON object"),
    ("null", b"null", "not a JSON object"),
    ("no prompt", b'{"id": "a"}', "no prompt or messages"),
    ("empty prompt", b'{"prompt": ""}', "prompt is empty"),
    ("blank prompt", b'{"prompt": " \\t\\n "}', "prompt is empty"),
    ("prompt and messages", b'{"prompt": "x", "messages": []}', "both prompt and messages"),
    ("prompt not text", b'{"prompt": 5}', "prompt must be a string"),
    ("prompt a list", b'{"prompt": ["x"]}', "prompt must be a string"),
    ("messages not a list", b'{"messages": "hi"}', "messages must be a list"),
    ("messages empty", b'{"messages": []}', "messages is empty"),
    ("message not an object", b'{"messages": ["hi"]}', "must be an object"),
    ("content a number", b'{"messages": [{"role": "user", "content": 5}]}', "content must be"),
    ("content empty", b'{"messages": [{"role": "user", "content": " "}]}', "content is empty"),
    ("no content", b'{"messages": [{"role": "user"}]}', "content must be"),
    ("unknown role", b'{"messages": [{"role": "bot", "content": "x"}]}', "unknown role 'bot'"),
    ("no role", b'{"messages": [{"content": "x"}]}', "unknown role None"),
    ("unknown model", b'{"prompt": "x", "model": "gpt-5"}', "unknown model 'gpt-5'"),
    ("model a number", b'{"prompt": "x", "model": 4}', "model must be a string"),
    ("id a float", b'{"id": 1.5, "prompt": "x"}', "id must be a string or an integer"),
    ("id a bool", b'{"id": true, "prompt": "x"}', "id must be a string or an integer"),
    ("id empty", b'{"id": " ", "prompt": "x"}', "id is empty"),
    ("invalid UTF-8 in a string", b'{"prompt": "caf\xe9"}', "invalid UTF-8"),
    ("invalid UTF-8 bytes", b"\xff\xfe\x00", "invalid UTF-8"),
    (
        "url not chat completions",
        json.dumps(
            {"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": {}}
        ).encode(),
        "url '/v1/embeddings' is not supported",
    ),
    (
        "method not POST",
        json.dumps({"custom_id": "g", "method": "GET", "url": BATCH_URL, "body": {}}).encode(),
        "method must be POST",
    ),
    (
        "body not an object",
        json.dumps({"custom_id": "b", "method": "POST", "url": BATCH_URL, "body": []}).encode(),
        "body must be an object",
    ),
    (
        "unknown model in a body",
        json.dumps(batch_line("m", USER, model="o1")).encode(),
        "unknown model 'o1'",
    ),
    (
        "image part",
        json.dumps(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is this?"},
                            {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                        ],
                    }
                ]
            }
        ).encode(),
        "image_url part",
    ),
    (
        "image part in a batch body",
        json.dumps(
            batch_line("img", [{"role": "user", "content": [{"type": "input_audio"}]}])
        ).encode(),
        "input_audio part",
    ),
    (
        "text part without text",
        b'{"messages": [{"role": "user", "content": [{"type": "text"}]}]}',
        "without a string 'text'",
    ),
]


@pytest.mark.parametrize(
    ("raw", "reason"), [c[1:] for c in BAD_LINES], ids=[c[0] for c in BAD_LINES]
)
def test_every_bad_line_becomes_an_invalid_line_with_a_one_line_reason(
    raw: bytes, reason: str
) -> None:
    item = parse_line(raw, 13, "gpt-4o", CHECK_MODEL)
    assert isinstance(item, InvalidLine)
    assert item.line == 13
    assert reason in item.reason
    assert "\n" not in item.reason and "\r" not in item.reason
    result = orjson.loads(encode(item.result(), "native"))
    assert result["status"] == "error"
    assert result["line"] == 13
    assert result["error"]["kind"] == INVALID_INPUT
    assert result["error"]["retryable"] is False
    assert result["attempts"] == 0


def test_an_invalid_line_keeps_the_id_it_had() -> None:
    item = parse({"id": "keep", "prompt": "x", "model": "gpt-5"})
    assert isinstance(item, InvalidLine)
    assert item.id == "keep"


def test_reasons_stay_on_one_line_whatever_the_line_quotes() -> None:
    item = parse({"messages": [{"role": "a\nb\r\u2028c", "content": "x"}], "model": "gpt-4o"})
    assert isinstance(item, InvalidLine)
    assert len(item.reason.splitlines()) == 1


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", ""]), "content": JSON_VALUES}
)
LINE_OBJECTS = st.dictionaries(
    st.sampled_from(
        ["id", "custom_id", "prompt", "messages", "model", "method", "url", "body", "x"]
    ),
    JSON_VALUES | st.lists(MESSAGE, max_size=3) | st.sampled_from(["gpt-4o", BATCH_URL, "POST"]),
    max_size=6,
)


@given(LINE_OBJECTS)
def test_any_json_object_parses_to_a_record_or_a_one_line_reason(obj: dict[str, Any]) -> None:
    item = parse_line(json.dumps(obj).encode(), 3, "gpt-4o", CHECK_MODEL)
    assert item.line == 3
    if isinstance(item, InvalidLine):
        assert item.reason and len(item.reason.splitlines()) == 1
        result = item.result()
    else:
        assert item.model in ("gpt-4", "gpt-4o", "gpt-4o-mini")
        assert item.messages
        assert all(m["role"] in ("system", "user", "assistant") for m in item.messages)
        result = Result(item.id, item.line, item.model, response="ok", metadata=item.metadata)
    for output_format in ("native", "openai"):
        assert decode_line(encode(result, output_format)).line == 3


@given(st.binary(max_size=64))
def test_any_bytes_parse_without_raising(raw: bytes) -> None:
    item = parse_line(raw, 1, "gpt-4o", CHECK_MODEL)
    assert isinstance(item, PromptRecord | InvalidLine)


# native results -----------------------------------------------------------------------------

IDS = st.one_of(
    st.text(min_size=1, max_size=12).filter(str.strip), st.integers(0, 10**9), st.none()
)
ERRORS = st.builds(
    ErrorInfo,
    kind=st.sampled_from(["captcha", "server_error", "timeout", INVALID_INPUT, "site_error"]),
    message=st.text(max_size=40),
    http_status=st.none() | st.sampled_from([200, 403, 429, 503]),
    retryable=st.booleans(),
)
RESULTS = st.builds(
    Result,
    id=IDS,
    line=st.integers(1, 10**7),
    model=st.sampled_from(["gpt-4", "gpt-4o", "gpt-4o-mini"]),
    response=st.text(max_size=40),
    error=st.none() | ERRORS,
    attempts=st.integers(0, 20),
    latency_ms=st.integers(0, 10**6),
    # Metadata comes from orjson.loads: integers within -2**63 .. 2**64-1, larger ones are floats.
    metadata=st.none()
    | st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**64 - 1), max_size=3),
    finished_at=st.floats(0, 4 * 10**9),
).map(lambda r: r if r.error is None else Result(**{**_fields(r), "response": None}))


def _fields(result: Result) -> dict[str, Any]:
    return {name: getattr(result, name) for name in Result.__slots__}


@given(RESULTS)
def test_native_lines_read_back_as_what_was_written(result: Result) -> None:
    raw = encode(result, "native")
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    obj = orjson.loads(raw)
    assert obj["id"] == result.id and obj["line"] == result.line
    assert obj["status"] == ("ok" if result.ok else "error")
    assert obj["response"] == result.response
    assert obj["finished_at"].endswith("Z")
    recorded = decode_line(raw)
    assert (recorded.line, recorded.id, recorded.ok) == (result.line, result.id, result.ok)
    assert recorded.kind == (None if result.error is None else result.error.kind)


@given(RESULTS)
def test_openai_lines_read_back_as_what_was_written(result: Result) -> None:
    raw = encode(result, "openai")
    recorded = decode_line(raw)
    expected_id = None if result.id is None else str(result.id)
    assert (recorded.line, recorded.id, recorded.ok) == (result.line, expected_id, result.ok)
    assert recorded.kind == (None if result.error is None else result.error.kind)
    check_openai_line(orjson.loads(raw))


RESULT_KEYS = ["id", "line", "status", "error", "custom_id", "response", "model"]
FIELD_NAMES = [
    "kind",
    "code",
    "type",
    "message",
    "retryable",
    "http_status",
    "status_code",
    "body",
    "error",
]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.sampled_from(["", "ok", "timeout"]),
    lambda inner: (
        st.lists(inner, max_size=2)
        | st.dictionaries(st.sampled_from(FIELD_NAMES), inner, max_size=4)
    ),
    max_leaves=8,
)


@settings(max_examples=400)
@given(
    RESULTS,
    st.sampled_from(["native", "openai"]),
    st.dictionaries(st.sampled_from(RESULT_KEYS), JSON_VALUES, max_size=3),
    st.sets(st.sampled_from(RESULT_KEYS), max_size=2),
)
def test_a_resume_reads_the_line_id_and_error_a_full_read_reads(
    result: Result, shape: str, changes: dict[str, Any], dropped: set[str]
) -> None:
    """Recovery reads every output line with the cheap `decode_outcome`; whatever a line holds,
    it must find what `decode_line` finds (or refuse the line with the same reason)."""
    obj = {**orjson.loads(encode(result, shape)), **changes}
    for key in dropped:
        obj.pop(key, None)
    raw = orjson.dumps(obj)
    seen = []
    for read in (decode_line, decode_outcome):
        try:
            record = read(raw)
        except ValueError as exc:
            seen.append(str(exc))
        else:
            seen.append((record.line, record.id, record.error))
    assert seen[0] == seen[1]


# OpenAI Batch output ------------------------------------------------------------------------


def check_openai_line(obj: dict[str, Any]) -> ChatCompletion | None:
    """One line against the published BatchRequestOutput schema; the parsed body of an answer."""
    assert set(obj) == {"id", "custom_id", "response", "error"}
    assert isinstance(obj["id"], str) and obj["id"].startswith("batch_req_")
    assert obj["custom_id"] is None or isinstance(obj["custom_id"], str)
    if obj["error"] is not None:
        assert set(obj["error"]) == {"code", "message"}
        assert isinstance(obj["error"]["code"], str)
        assert isinstance(obj["error"]["message"], str)
        assert obj["response"] is None, "a failed request has no response (DESIGN.md)"
        return None
    response = obj["response"]
    assert set(response) == {"status_code", "request_id", "body"}
    assert response["status_code"] == 200
    assert isinstance(response["request_id"], str) and response["request_id"]
    assert isinstance(response["body"], dict)
    return ChatCompletion.model_validate(response["body"])


def openai_job(tmp: Path) -> tuple[Path, list[dict[str, Any] | bytes]]:
    lines: list[dict[str, Any] | bytes] = [*mixed_prompts(9, tag="o")]
    lines.append({"id": "cap", "prompt": "[captcha] let me in"})
    lines.append(b"{not json")
    lines.append({"id": "o1", "prompt": "a duplicate id"})
    lines.append({"prompt": "no id of my own"})
    return write_jsonl(tmp / "prompts.jsonl", lines), lines


def test_openai_format_matches_the_batch_output_schema_and_the_sdk_parses_every_answer(
    emulator, tmp: Path
) -> None:
    prompts, lines = openai_job(tmp)

    done = run_job(prompts, emulator.url, "--format", "openai")

    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    out = read_results(tmp / "prompts.results.jsonl")
    assert len(out) == len(lines)
    assert len({obj["id"] for obj in out}) == len(out)
    by_custom_id = {obj["custom_id"]: obj for obj in out}
    answered = 0
    for number, line in enumerate(lines, start=1):
        if not isinstance(line, dict) or line.get("id") in ("cap",) or number == 12:
            continue
        obj = by_custom_id[str(line_id(line, number))]
        completion = check_openai_line(obj)
        assert completion is not None, obj
        assert completion.object == "chat.completion"
        assert completion.choices[0].message.role == "assistant"
        assert completion.choices[0].finish_reason == "stop"
        assert completion.choices[0].message.content == expected_answer(sent_message(line))
        assert completion.model == line.get("model", line.get("body", {}).get("model", "gpt-4o"))
        answered += 1
    assert answered == 10
    errors = [obj for obj in out if obj["error"] is not None]
    for obj in errors:
        check_openai_line(obj)
    assert sorted(obj["error"]["code"] for obj in errors) == [
        "captcha",
        INVALID_INPUT,
        INVALID_INPUT,
    ]
    assert by_custom_id["cap"]["error"]["code"] == "captcha"

    again = run_job(prompts, emulator.url, "--format", "openai")
    assert again.returncode == 1, again.stderr
    assert emulator.stats.posts == 11, "a finished job run again must send nothing"
    assert len(read_results(tmp / "prompts.results.jsonl")) == len(lines)


def test_convert_native_to_openai_and_back_keeps_ids_lines_answers_and_error_kinds(
    emulator, tmp: Path
) -> None:
    prompts, lines = openai_job(tmp)
    native = tmp / "prompts.results.jsonl"
    assert run_job(prompts, emulator.url).returncode == 1

    to_openai = run_cli("convert", native, tmp / "openai.jsonl", "--to", "openai")
    assert to_openai.returncode == 0, to_openai.stderr
    assert f"wrote {len(lines)} openai results" in to_openai.stderr
    for obj in read_results(tmp / "openai.jsonl"):
        check_openai_line(obj)
    back = run_cli("convert", tmp / "openai.jsonl", tmp / "native.jsonl", "--to", "native")
    assert back.returncode == 0, back.stderr

    def essentials(path: Path) -> list[tuple[Any, ...]]:
        return sorted(
            (
                obj["line"],
                None if obj["id"] is None else str(obj["id"]),
                obj["status"],
                obj["response"],
                (obj.get("error") or {}).get("kind"),
            )
            for obj in read_results(path)
        )

    assert essentials(tmp / "native.jsonl") == essentials(native)
    assert len(essentials(native)) == len(lines)


def test_convert_refuses_a_file_that_is_not_results(tmp: Path) -> None:
    source = write_jsonl(tmp / "prompts.jsonl", [{"id": "a", "prompt": "not a result"}])
    done = run_cli("convert", source, tmp / "out.jsonl", "--to", "openai")
    assert done.returncode == 2
    assert "prompts.jsonl:1" in done.stderr
