"""What every emulator shares of its control: typed settings (`--set key=value`, the control API)
and the control API itself under `/__emulator__/`: its counters, and a change of its settings."""

from __future__ import annotations

import dataclasses
import random
from typing import Any, ClassVar, Protocol

from aiohttp import web

CONTROL_PREFIX = "/__emulator__/"


def update_settings(settings: Any, changes: dict[str, Any]) -> None:
    """Set the fields of the dataclass `settings` named in `changes`, each converted to the
    field's type (text from `--set` included: "1", "true", "yes" and "on" are true)."""
    names = {f.name for f in dataclasses.fields(settings)}
    for key, value in changes.items():
        if key not in names:
            raise KeyError(f"unknown emulator setting {key!r}")
        kind = type(getattr(settings, key))
        if kind is bool and isinstance(value, str):
            value = value.lower() in ("1", "true", "yes", "on")
        setattr(settings, key, kind(value))


class _Settings(Protocol):
    __dataclass_fields__: ClassVar[dict[str, Any]]
    seed: int

    def update(self, changes: dict[str, Any]) -> None: ...


class _Stats(Protocol):
    def snapshot(self) -> dict[str, Any]: ...


class Controlled:
    """An emulator with `config`, `stats` and a seeded `_random`: `add_control_routes` serves
    GET `stats` and POST `config` (a JSON object of settings; `reset_stats: true` zeroes the
    counters first) for tests and benchmarks that run it in another process."""

    config: _Settings
    stats: _Stats
    _random: random.Random

    def reset_stats(self) -> None:
        raise NotImplementedError

    def add_control_routes(self, app: web.Application) -> None:
        app.router.add_get(CONTROL_PREFIX + "stats", self._get_stats)
        app.router.add_post(CONTROL_PREFIX + "config", self._set_config)

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.snapshot())

    async def _set_config(self, request: web.Request) -> web.Response:
        changes = await request.json()
        if changes.pop("reset_stats", False):
            self.reset_stats()
        try:
            self.config.update(changes)
        except (KeyError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self._random = random.Random(self.config.seed)
        return web.json_response(dataclasses.asdict(self.config))
