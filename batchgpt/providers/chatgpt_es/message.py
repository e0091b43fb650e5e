"""What chatgpt.es is sent for a list of chat messages: one text, the same for both chat
generations (PROTOCOL.md §C4): the seed's system prompt, a space, then the formatted messages."""

from __future__ import annotations

from batchgpt.providers.base import Messages
from batchgpt.records import content_text

SYSTEM_PROMPT = (
    "Your default language is English. Always respond in English unless the user's message "
    "is in a different language. If the user's message is not in English, respond in the "
    "language of the user's message. Maintain this language behavior throughout the "
    "conversation unless explicitly instructed otherwise. User input:"
)


def format_prompt(messages: Messages) -> str:
    """gpt4free's `format_prompt`: one message as is, several as `Role: content` lines."""
    if len(messages) == 1:
        return content_text(messages[0]["content"])
    lines = [f"{m['role'].capitalize()}: {content_text(m['content'])}" for m in messages]
    return "\n".join([*lines, "Assistant:"])


def format_message(messages: Messages, system_prompt: str = SYSTEM_PROMPT) -> str:
    """The message field: the system prompt, a space, then the formatted messages."""
    return f"{system_prompt} {format_prompt(messages)}"
