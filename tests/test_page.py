"""`find_legacy_chat`: every known nonce markup, in order of trust, robust to any HTML around it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchgpt.providers.chatgpt_es.page import (
    PAGE_LIMIT,
    AipkitBot,
    AipkitChat,
    LegacyChat,
    find_aipkit_chat,
    find_legacy_chat,
    read_chat_page,
)

NONCE = "8cf9917be2"

WIDGET = (
    '<div class="wpaicg-chat-shortcode" data-user-bg-color="#444654" data-nonce="{nonce}" '
    'data-post-id="{post_id}" data-url="{url}" data-bot-id="0" data-type="shortcode"></div>'
)


def widget(nonce: str = NONCE, post_id: str = "106", url: str = "https://chatgpt.es") -> str:
    return WIDGET.format(nonce=nonce, post_id=post_id, url=url)


def page(body: str) -> str:
    return (
        "<!DOCTYPE html><html><head><title>ChatGPT en Español</title>"
        '<script>var other = {"nonce":"0000000000"};</script></head>'
        f"<body><h1>ChatGPT Español</h1>{body}</body></html>"
    )


# markups ------------------------------------------------------------------------------------------


def test_widget_attributes() -> None:
    found = find_legacy_chat(page(widget()))
    assert found == LegacyChat(
        nonce=NONCE, post_id="106", url="https://chatgpt.es", source="data-nonce"
    )


def test_widget_attributes_in_any_order_and_quotes() -> None:
    markup = (
        "<div data-bot-id='0' data-url='https://chatgpt.es/chat' data-nonce='abc123' "
        "data-post-id='7' class='wpaicg-chat-widget'>"
    )
    assert find_legacy_chat(page(markup)) == LegacyChat(
        "abc123", "7", "https://chatgpt.es/chat", "data-nonce"
    )


def test_widget_url_is_html_unescaped() -> None:
    found = find_legacy_chat(page(widget(url="https://chatgpt.es/?a=1&amp;b=2")))
    assert found is not None
    assert found.url == "https://chatgpt.es/?a=1&b=2"


def test_widget_without_post_id_or_url() -> None:
    found = find_legacy_chat(
        page(f'<div class="wpaicg-chat-shortcode" data-nonce="{NONCE}"></div>')
    )
    assert found == LegacyChat(NONCE, "", None, "data-nonce")


def test_widget_with_empty_attributes() -> None:
    markup = (
        f'<div class="wpaicg-chat-shortcode" data-user-bg-color="" data-nonce="{NONCE}" '
        "data-post-id='' data-url=\"\"></div>"
    )
    assert find_legacy_chat(page(markup)) == LegacyChat(NONCE, "", None, "data-nonce")


def test_widget_post_id_that_is_not_a_number_is_dropped() -> None:
    found = find_legacy_chat(page(widget(post_id="abc")))
    assert found is not None
    assert found.post_id == ""


def test_wpaicg_params_script() -> None:
    script = (
        "<script>var wpaicgParams = "
        '{"ajax_url":"https:\\/\\/chatgpt.es\\/wp-admin\\/admin-ajax.php",'
        f'"search_nonce":"{NONCE}","logged_in":"0"}};</script>'
    )
    assert find_legacy_chat(page(script)) == LegacyChat(NONCE, "", None, "wpaicgParams")


def test_wpaicg_params_after_an_empty_one() -> None:
    script = (
        "<script>var wpaicgParams = {}; window.wpaicgParams = "
        f'{{"ajax_url":"/wp-admin/admin-ajax.php","search_nonce":"{NONCE}"}};</script>'
    )
    assert find_legacy_chat(page(script)) == LegacyChat(NONCE, "", None, "wpaicgParams")


@pytest.mark.parametrize("quote", ['"', "'"])
def test_hidden_inputs(quote: str) -> None:
    q = quote
    form = (
        f"<form><input type={q}hidden{q} name={q}_wpnonce{q} value={q}{NONCE}{q}>"
        f"<input type={q}hidden{q} name={q}post_id{q} value={q}106{q}></form>"
    )
    assert find_legacy_chat(page(form)) == LegacyChat(NONCE, "106", None, "fallback")


@pytest.mark.parametrize(
    "script",
    [
        f"<script>var wpaicg_nonce = '{NONCE}'; var post_id = 106;</script>",
        f'<script>var wpaicg_nonce = "{NONCE}"; var post_id = "106";</script>',
        f'<script>var cfg = {{"_wpnonce":"{NONCE}","post_id":"106"}};</script>',
        f"<script>var cfg = {{wpaicg_nonce: '{NONCE}'}}; var post_id = 106;</script>",
    ],
)
def test_inline_json_and_script_vars(script: str) -> None:
    assert find_legacy_chat(page(script)) == LegacyChat(NONCE, "106", None, "fallback")


def test_post_id_fallback_also_serves_wpaicg_params() -> None:
    markup = f'<script>var wpaicgParams = {{"search_nonce":"{NONCE}"}}; var post_id = 42;</script>'
    assert find_legacy_chat(page(markup)) == LegacyChat(NONCE, "42", None, "wpaicgParams")


# trust order and specificity ----------------------------------------------------------------------


def test_widget_wins_over_every_other_markup() -> None:
    others = (
        '<script>var wpaicgParams = {"search_nonce":"paramsnonce"};</script>'
        '<input type="hidden" name="_wpnonce" value="inputnonce">'
        "<script>var wpaicg_nonce = 'varnonce';</script>"
    )
    found = find_legacy_chat(page(others + widget()))
    assert found is not None
    assert (found.nonce, found.source) == (NONCE, "data-nonce")


def test_wpaicg_params_wins_over_provider_only_markups() -> None:
    markup = (
        '<input type="hidden" name="_wpnonce" value="inputnonce">'
        '<script>var wpaicgParams = {"search_nonce":"paramsnonce"};</script>'
    )
    found = find_legacy_chat(page(markup))
    assert found is not None
    assert (found.nonce, found.source) == ("paramsnonce", "wpaicgParams")


def test_widget_with_a_bad_nonce_falls_back_to_the_next_markup() -> None:
    markup = widget(nonce="not a nonce!") + "<script>var wpaicg_nonce = 'varnonce';</script>"
    found = find_legacy_chat(page(markup))
    assert found is not None
    assert (found.nonce, found.source) == ("varnonce", "fallback")


@pytest.mark.parametrize(
    "markup",
    [
        "<p>The chat is unavailable.</p>",
        '<div class="other-plugin" data-nonce="0123456789"></div>',
        '<script>var other = {"nonce":"0123456789","security":"abcdef"};</script>',
        '<input type="hidden" name="woocommerce-login-nonce" value="0123456789">',
        '<script>var someParams = {"search_nonce":"0123456789"};</script>',
        "<title>Just a moment...</title><div id='cf-spinner-please-wait'></div>",
    ],
)
def test_pages_without_a_chat_nonce(markup: str) -> None:
    assert find_legacy_chat(page(markup)) is None


def test_empty_page() -> None:
    assert find_legacy_chat(b"") is None
    assert find_legacy_chat("") is None


def test_bytes_and_text_give_the_same_result() -> None:
    text = page(widget(url="https://chatgpt.es/ñ"))
    assert find_legacy_chat(text.encode()) == find_legacy_chat(text)


def test_invalid_utf8_is_tolerated() -> None:
    assert find_legacy_chat(b"\xff\xfe" + widget().encode() + b"\xc3") is not None


def test_only_the_first_page_limit_bytes_are_read() -> None:
    padding = "x" * PAGE_LIMIT
    assert find_legacy_chat(page(widget())[:200] + padding + widget()) is None
    assert find_legacy_chat((padding + widget()).encode()) is None


# open-ended input ---------------------------------------------------------------------------------

tokens = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-",
    min_size=1,
    max_size=64,
)
post_ids = st.one_of(st.just(""), st.integers(min_value=0, max_value=10**12).map(str))
html_noise = st.lists(
    st.one_of(
        st.text(alphabet=st.characters(blacklist_characters="<", codec="utf-8"), max_size=40),
        st.sampled_from(
            [
                "<p>",
                "</p>",
                "<div class='entry-content'>",
                '<div id="x" data-id="3">',
                "</div>",
                "<br/>",
                "<!-- wp:paragraph -->",
                '<script>var other = {"nonce":"0000000000"};</script>',
                '<input type="text" name="q" value="search">',
                '<a href="https://chatgpt.es/?p=1&amp;q=2">link</a>',
                "<span data-nonce='zzz'>",
            ]
        ),
    ),
    max_size=30,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(before=html_noise, after=html_noise, nonce=tokens, post_id=post_ids)
def test_widget_is_found_in_any_html(before: str, after: str, nonce: str, post_id: str) -> None:
    markup = before + widget(nonce=nonce, post_id=post_id) + after
    expected = LegacyChat(nonce, post_id, "https://chatgpt.es", "data-nonce")
    assert find_legacy_chat(markup) == expected
    assert find_legacy_chat(markup.encode()) == expected


@settings(max_examples=200, deadline=None)
@given(before=html_noise, after=html_noise, nonce=tokens)
def test_wpaicg_params_is_found_in_any_html(before: str, after: str, nonce: str) -> None:
    script = f'<script>var wpaicgParams = {{"ajax_url":"/x","search_nonce":"{nonce}"}};</script>'
    found = find_legacy_chat(before + script + after)
    assert found is not None
    assert (found.nonce, found.source) == (nonce, "wpaicgParams")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=2000), st.text(max_size=2000)))
def test_any_input_gives_a_valid_page_or_none(data: bytes | str) -> None:
    found = find_legacy_chat(data)
    if found is not None:
        assert 1 <= len(found.nonce) <= 64
        assert found.post_id == "" or found.post_id.isdigit()


HOSTILE = [
    "<div " * 200_000,
    '<div class="wpaicg-chat" data-nonce="' * 30_000,
    "<div wpaicg-chat data-nonce " + "a" * 1_000_000,
    "<div wpaicg-chat data-nonce" + ' a="' * 1000 + ">",
    "wpaicgParams = {" * 65_536,
    "wpaicgParams = {" + '"search_nonce": ' * 60_000,
    '<input type="hidden" name="_wpnonce" value="' * 25_000,
    '"_wpnonce" : ' * 100_000,
    "var " * 250_000,
    "var post_id = '" * 70_000,
    "var" + " " * 1_000_000,
    "wpaicg_nonce" + " " * 1_000_000,
    "<" * 1_000_000,
    '"' * 1_000_000,
]


@pytest.mark.parametrize("hostile", HOSTILE, ids=[h[:24] for h in HOSTILE])
def test_hostile_html_returns(hostile: str) -> None:
    for data in (hostile, hostile.encode()):
        found = find_legacy_chat(data)
        assert found is None or 1 <= len(found.nonce) <= 64


def test_widget_after_a_megabyte_of_junk_is_still_found() -> None:
    found = find_legacy_chat("<div " * 200_000 + widget())
    assert found is not None
    assert found.nonce == NONCE


# AIPKit (plugin ≥ 2.3) ----------------------------------------------------------------------------


def aipkit_config(bot_id: int = 4, nonce: str = NONCE, **extra: object) -> str:
    """A `data-config` as the plugin prints it: wp_json_encode (escaped slashes) in esc_attr."""
    import html
    import json

    data = {
        "botId": bot_id,
        "ajaxUrl": "https://chatgpt.es/wp-admin/admin-ajax.php",
        "nonce": nonce,
        "postId": 5,
        "provider": "OpenAI",
        "requireConsentCompliance": False,
        "text": {"initialGreeting": "Hello <there> & 'you'"},
        **extra,
    }
    return html.escape(json.dumps(data).replace("/", "\\/"))


def inline_bot(bot_id: int = 4, nonce: str = NONCE) -> str:
    return (
        f'<div class="aipkit_chat_container aipkit-theme-dark" id="aipkit_chat_container_{bot_id}"'
        f" data-bot-id=\"{bot_id}\" data-config='{aipkit_config(bot_id, nonce)}'></div>"
    )


def popup_bot(bot_id: int = 4) -> str:
    return (
        f'<div class="aipkit_popup_wrapper aipkit-popup-standard" id="aipkit_popup_wrapper_'
        f"{bot_id}\" data-config='{aipkit_config(bot_id)}'>"
        f'<div class="aipkit_chat_container" id="aipkit_chat_container_{bot_id}" aria-hidden="true"'
        " inert></div></div>"
    )


REFRESH = '<script>window.aipkit_getChatNonceAction = "aipkit_get_frontend_chat_nonce";</script>'


def test_an_inline_bot() -> None:
    found = read_chat_page(page(inline_bot()))
    assert found.generation == "aipkit"
    assert found.legacy is None
    assert found.aipkit == AipkitChat(
        (
            AipkitBot(
                bot_id=4,
                nonce=NONCE,
                ajax_url="https://chatgpt.es/wp-admin/admin-ajax.php",
                post_id=5,
                mode="inline",
                provider="OpenAI",
            ),
        ),
        None,
    )


def test_a_popup_bot_is_read_from_its_wrapper_not_its_inner_container() -> None:
    found = find_aipkit_chat(page(popup_bot() + REFRESH))
    assert found is not None
    (bot,) = found.bots
    assert (bot.bot_id, bot.mode, bot.nonce) == (4, "popup", NONCE)
    assert found.nonce_action == "aipkit_get_frontend_chat_nonce"


def test_several_bots_in_page_order_each_once() -> None:
    found = find_aipkit_chat(page(inline_bot(7) + popup_bot(4) + inline_bot(7)))
    assert found is not None
    assert [bot.bot_id for bot in found.bots] == [7, 4]
    assert found.bot(None) is found.bots[0]
    assert found.bot(4) is found.bots[1]
    assert found.bot(9) is None


def test_a_double_quoted_config_and_flags() -> None:
    config = aipkit_config(requireConsentCompliance=True, enableOpenAIConversationState=True)
    markup = f'<div class="aipkit_chat_container" data-config="{config}"></div>'
    found = find_aipkit_chat(page(markup))
    assert found is not None
    assert found.bots[0].require_consent and found.bots[0].conversation_state


@pytest.mark.parametrize(
    "config",
    [
        "not json",
        "[1, 2]",
        '{"botId": "x", "nonce": "8cf9917be2"}',
        '{"botId": 4, "nonce": 12}',
        '{"botId": 4, "nonce": "bad nonce!"}',
        '{"botId": 0, "nonce": "8cf9917be2"}',
        '{"nonce": "8cf9917be2"}',
    ],
)
def test_a_broken_config_is_no_bot(config: str) -> None:
    import html

    markup = f"<div class=\"aipkit_chat_container\" data-config='{html.escape(config)}'></div>"
    assert find_aipkit_chat(page(markup)) is None
    assert read_chat_page(page(markup)).generation is None


def test_a_bot_id_and_post_id_as_text_are_numbers() -> None:
    import html

    config = html.escape('{"botId": "12", "postId": "7", "nonce": "8cf9917be2"}')
    found = find_aipkit_chat(page(f"<div class='aipkit_chat_container' data-config='{config}'>"))
    assert found is not None
    assert (found.bots[0].bot_id, found.bots[0].post_id, found.bots[0].ajax_url) == (12, 7, None)


def test_a_page_with_the_legacy_widget_is_legacy() -> None:
    found = read_chat_page(page(widget()))
    assert found.generation == "legacy"
    assert found.aipkit is None


def test_the_aipkit_bot_is_found_after_a_megabyte_of_junk() -> None:
    junk = "<p>" + "x" * 1_000_000 + "</p>"
    assert find_aipkit_chat(page(junk + popup_bot())) is not None


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(
        [
            "<div class=aipkit_chat_container " * 20_000,
            "<div " + "aipkit_popup_wrapper " * 50_000,
            ("<div class='aipkit_chat_container' data-config='" + "x" * 1000) * 1000,
            "<div data-config='" + "&quot;" * 200_000,
        ]
    )
)
def test_hostile_aipkit_markup_returns(hostile: str) -> None:
    read_chat_page(hostile)
