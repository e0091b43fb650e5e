"""What an installed batchgpt offers at its top: the library's names and the version."""

from __future__ import annotations

from importlib.metadata import version

import pytest
from support import run_cli

import batchgpt


@pytest.mark.parametrize("name", batchgpt.__all__)
def test_every_exported_name_loads(name: str) -> None:
    assert getattr(batchgpt, name).__name__ == name


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.endswith(f"batchgpt, version {version('batchgpt')}\n")
