"""Credentials never leave the process: every URL we print goes through `redact`."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{0,15}://)[^/@\s]{1,512}@")


def redact(text: str) -> str:
    """Replace the user:password part of every URL in `text` with `***`."""
    return _USERINFO.sub(r"\g<scheme>***@", text)
