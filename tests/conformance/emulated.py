"""batchgpt's emulator in its own process, in the mode of one chat generation and release.

`python -m batchgpt emulator --port P --set chat=legacy|aipkit [--set plugin=2.3|2.4.71]`: the
AIPKit releases before 2.3.41 are emulated as 2.3, the later ones as 2.4.71. An emulator that
refuses the `chat` setting has one mode only, the legacy chat: legacy then runs without the
setting (and says so), AIPKit is reported as "emulator has no aipkit mode".
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conformance.plugin import version_key
from tests.conformance.services import Daemon, ServiceError, free_port, port_open


@dataclass
class EmulatorInfo:
    url: str | None
    note: str = ""


def _start(settings: list[str], log: Path) -> tuple[Daemon, str]:
    port = free_port()
    args = [sys.executable, "-m", "batchgpt", "emulator", "--port", str(port)]
    for setting in settings:
        args += ["--set", setting]
    daemon = Daemon("batchgpt emulator", args, log)
    daemon.start(lambda: port_open(port), timeout=30)
    return daemon, f"http://127.0.0.1:{port}"


def emulated_release(release: str) -> str:
    """The emulator's `plugin` profile for an AIPKit release: 2.3's until the nonce refresh
    action arrived (2.3.41; the new nonce error text came in 2.3.20), 2.4.71's from then on."""
    return "2.3" if version_key(release) < (2, 3, 41) else "2.4.71"


@contextmanager
def running_emulator(
    generation: str, release: str, workdir: Path, bot_mode: str | None = None
) -> Iterator[EmulatorInfo]:
    """Yield the emulator's URL in `generation`'s mode, or None with the reason. `bot_mode`
    (inline or popup) is how the real page shows its bot: the default bot's deploy mode varies
    between releases of one profile (2.4.51 inline, 2.4.71 popup)."""
    log = workdir / f"emulator-{generation}.log"
    daemon: Daemon | None = None
    info = EmulatorInfo(None)
    settings = [f"chat={generation}"]
    if generation == "aipkit":
        settings.append(f"plugin={emulated_release(release)}")
        if bot_mode:
            settings.append(f"bot_mode={bot_mode}")
    try:
        try:
            daemon, url = _start(settings, log)
            info = EmulatorInfo(url, " ".join(f"--set {setting}" for setting in settings))
        except ServiceError as exc:
            refused = "chat" in str(exc) and ("unknown" in str(exc).lower())
            if not refused:
                info = EmulatorInfo(None, f"emulator did not start: {str(exc)[-300:]}")
            elif generation == "aipkit":
                info = EmulatorInfo(None, "emulator has no aipkit mode (it refuses --set chat)")
            else:
                daemon, url = _start([], log)
                info = EmulatorInfo(url, "emulator has no chat setting; ran its only (legacy) mode")
        yield info
    finally:
        if daemon:
            daemon.stop()
