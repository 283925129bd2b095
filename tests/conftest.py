"""Shared test set-up: fixture paths, hypothesis profiles, the real-server fixture modules."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"

# Every tests/fixtures_*.py module (real InfluxDB, VictoriaMetrics, Mosquitto servers) is a plugin.
pytest_plugins = sorted(f"tests.{p.stem}" for p in Path(__file__).parent.glob("fixtures_*.py"))

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "default")


@pytest.fixture(autouse=True, scope="session")
def _history_outside_var_lib(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Configs built in tests without a [history] path put the store in a temp dir, never /var/lib."""
    from app.store.settings import HistoryConfig

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(HistoryConfig, "path", str(tmp_path_factory.mktemp("history") / "history.sqlite"))
        yield


def manifest(kind: str) -> list[dict[str, Any]]:
    """MANIFEST.json of ../shared/fixtures/<kind>."""
    path = FIXTURES / kind / "MANIFEST.json"
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing (CI must have ../shared beside the repo)")
        pytest.skip(f"{path} is missing: put the shared fixtures beside the repo")
    data: list[dict[str, Any]] = json.loads(path.read_text())
    return data


def require_binary(path: str, package: str) -> None:
    """Skip (or fail in CI) when a server binary is missing."""
    if not os.access(path, os.X_OK):
        msg = f"{path} missing: sudo apt-get install -y {package}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
