"""Fixtures that start the real stack: five service processes and the Envoy gateway on free loopback ports, under
the supervisor."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from infinitetalk.stack import StackPorts, Supervisor

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "artifacts"))


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def stack() -> AsyncIterator[Supervisor]:
    logs = Path(tempfile.mkdtemp(prefix="infinitetalk-test-logs-"))
    async with Supervisor(StackPorts.free(), log_dir=logs, report=False).running() as supervisor:
        yield supervisor


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
