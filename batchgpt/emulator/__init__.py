"""A local chatgpt.es for tests, benchmarks and the demo: site.py has what both chat generations
share, legacy.py and aipkit.py one generation each."""

from batchgpt.emulator.control import CONTROL_PREFIX
from batchgpt.emulator.site import (
    AJAX_PATH,
    CAPTCHA_TEXT,
    CHATS,
    COOKIE,
    NONCE_FAILURES,
    NONCE_MARKUPS,
    PLUGINS,
    Emulator,
    EmulatorConfig,
    EmulatorStats,
    expected_answer,
    max_in_window,
    running_emulator,
    serve_forever,
)

__all__ = [
    "AJAX_PATH",
    "CAPTCHA_TEXT",
    "CHATS",
    "CONTROL_PREFIX",
    "COOKIE",
    "NONCE_FAILURES",
    "NONCE_MARKUPS",
    "PLUGINS",
    "Emulator",
    "EmulatorConfig",
    "EmulatorStats",
    "expected_answer",
    "max_in_window",
    "running_emulator",
    "serve_forever",
]
