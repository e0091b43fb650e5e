"""The conformance harness' own pieces, without WordPress: shapes, page reading, the raw HTTP
client, the fake upstream, the answer checks, and the legacy probes against the emulator."""

from __future__ import annotations

import html
import json
import urllib.request

import pytest
from conftest import RunningEmulator

from tests.conformance.markup import read_page
from tests.conformance.plugin import generation_of
from tests.conformance.probes import LEGACY_PROBES, diff, run_probes
from tests.conformance.runs import CliRun, check_prompts, framed, summarise
from tests.conformance.shapes import body_shape, sse_events, structure
from tests.conformance.upstream import answer_for, running_upstream, user_messages
from tests.conformance.wire import Exchange, dechunk


def _exchange(body: bytes, content_type: str = "text/html", status: int = 200) -> Exchange:
    return Exchange(
        "x",
        "GET",
        "http://h/",
        b"",
        status=status,
        body=body,
        headers=[("Content-Type", content_type)],
    )


def test_structure_keeps_enumerated_values_only() -> None:
    body = {"success": False, "data": {"code": "nonce_failure_cache_sse", "message": "Expired."}}
    assert structure(body) == '{data:{code:"nonce_failure_cache_sse",message:str},success:false}'
    assert (
        structure({"choices": [{"delta": {"content": "hi"}}]})
        == "{choices:[{delta:{content:str}}]}"
    )


def test_event_stream_shape_folds_repeats_and_keeps_error_texts() -> None:
    stream = (
        ": " + " " * 4096 + "\n\n"
        'event: message_start\ndata: {"message_id":"m1"}\n\n'
        'data: {"delta":"Hel"}\n\ndata: {"delta":"lo"}\n\n'
        'event: error\nid: err-1\ndata: {"error":"Message not found in cache."}\n\n'
        'event: done\ndata: {"finished":true}\n\n'
    )
    shape = body_shape(_exchange(stream.encode(), "text/event-stream"))
    assert shape == (
        ": message_start{message_id:str} message{delta:str}+ "
        'error{error:"Message not found in cache."} done{finished:true}'
    )
    assert [name for name, _ in sse_events("data: [DONE]\n\n")] == ["message"]


def test_short_text_and_html_bodies() -> None:
    assert body_shape(_exchange(b"0", "text/html")) == "text '0'"
    expired = b"The link you followed has expired.</p><p><a href='/'>Please try again.</a>"
    assert body_shape(_exchange(expired)) == "html The link you followed has expired"


def test_dechunk_tolerates_a_cut_stream() -> None:
    assert dechunk(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n") == b"hello world"
    assert dechunk(b"5\r\nhello\r\n6\r\n wo") == b"hello wo"


def test_read_page_finds_aipkit_popup_and_legacy_widget() -> None:
    config = {
        "botId": 4,
        "nonce": "0a1b2c3d4e",
        "ajaxUrl": "http://h/wp-admin/admin-ajax.php",
        "postId": 5,
    }
    page = (
        f'<div class="aipkit_popup_wrapper x" id="aipkit_popup_wrapper_4" '
        f"data-config='{html.escape(json.dumps(config))}'><div class=\"aipkit_chat_container\" "
        'id="aipkit_chat_container_4"></div></div>'
        '<script>window.aipkit_getChatNonceAction = "aipkit_get_frontend_chat_nonce";</script>'
    )
    facts = read_page(page)
    assert facts.generation == "aipkit"
    assert (facts.bots[0].bot_id, facts.bots[0].nonce, facts.bots[0].post_id) == (
        4,
        "0a1b2c3d4e",
        5,
    )
    assert facts.nonce_action == "aipkit_get_frontend_chat_nonce"
    assert len(facts.tags) == 2
    legacy = read_page(
        '<div class="wpaicg-chat-shortcode"\n data-nonce="8cf9917be2"\n data-post-id="7">'
    )
    assert (legacy.generation, legacy.legacy_nonce) == ("legacy", "8cf9917be2")


def test_generation_by_version() -> None:
    assert [generation_of(v) for v in ("1.9.16", "2.2", "2.3", "2.4.71")] == [
        "legacy",
        "legacy",
        "aipkit",
        "aipkit",
    ]


def test_fake_upstream_streams_the_responses_api_and_logs_the_request() -> None:
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "input": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}],
    }
    with running_upstream() as (upstream, url):
        request = urllib.request.Request(
            url + "/v1/responses",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            events = sse_events(response.read().decode())
        logged = upstream.since(0)
    deltas = "".join(json.loads(d)["delta"] for n, d in events if n == "response.output_text.delta")
    assert deltas == answer_for("Hi")
    assert events[0][0] == "response.created" and events[-1][0] == "response.completed"
    assert logged[0]["user_messages"] == ["Hi"] and logged[0]["answer"] == answer_for("Hi")
    assert user_messages(
        "/v1/chat/completions",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ]
        },
    ) == ["ab"]


def test_check_prompts_holds_answers_against_the_upstream_log() -> None:
    prompts = [{"id": "p1", "prompt": "Say one."}, {"id": "p2", "prompt": "Say two."}]
    twice = framed("Say two.")
    upstream = [
        {"user_messages": [framed("Say one.")], "answer": "A1", "body": {"m": framed("Say one.")}},
        {"user_messages": [twice, twice], "answer": "A2", "body": {"m": [twice, twice]}},
    ]
    run = CliRun(
        [],
        0,
        0.0,
        1.0,
        "",
        [
            {"id": "p1", "status": "ok", "response": "A1"},
            {"id": "p2", "status": "ok", "response": "wrong"},
        ],
    )
    summary = summarise(check_prompts(run, prompts, upstream))
    assert (summary["correct"], summary["framing_ok"], summary["once"]) == (1, 2, 1)


@pytest.mark.emulator_config(chat="legacy")
def test_legacy_probes_against_the_emulator(emulator: RunningEmulator) -> None:
    probed = run_probes("emulator", "legacy", emulator.url + "/")
    assert not probed.error
    shapes = probed.shapes()
    assert shapes["legacy_ok"]["status"] == "200"
    assert shapes["unknown_action"]["body"] == "text '0'"
    assert all(line.ok for line in diff(probed, probed, LEGACY_PROBES))
