"""A local chatgpt.es for tests, benchmarks and the demo (see site.py)."""

from batchgpt.emulator.site import (
    AJAX_PATH,
    CAPTCHA_TEXT,
    CONTROL_PREFIX,
    COOKIE,
    NONCE_FAILURES,
    NONCE_MARKUPS,
    Emulator,
    EmulatorConfig,
    EmulatorStats,
    bound_port,
    expected_answer,
    max_in_window,
    running_emulator,
    serve,
    serve_forever,
)

__all__ = [
    "AJAX_PATH",
    "CAPTCHA_TEXT",
    "CONTROL_PREFIX",
    "COOKIE",
    "NONCE_FAILURES",
    "NONCE_MARKUPS",
    "Emulator",
    "EmulatorConfig",
    "EmulatorStats",
    "bound_port",
    "expected_answer",
    "max_in_window",
    "running_emulator",
    "serve",
    "serve_forever",
]
