"""Fixtures that start the real stack: five service processes and the Envoy gateway on free loopback ports, under
the supervisor."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from unittest import mock

import pytest
import pytest_asyncio

from infinitetalk_live.ports import StackPorts
from infinitetalk_live.stack import Supervisor

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "artifacts"))


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def stack() -> AsyncIterator[Supervisor]:
    logs = Path(tempfile.mkdtemp(prefix="infinitetalk-test-logs-"))
    # Many tests share this stack and create sessions through Envoy from 127.0.0.1: lift the per-client rate (read
    # when the supervisor renders Envoy's config; tests/test_gateway_abuse.py checks the limit itself).
    async with contextlib.AsyncExitStack() as running:
        with mock.patch.dict(os.environ, {"GATEWAY_CREATE_BURST": "1000", "GATEWAY_CREATE_PER_MINUTE": "6000"}):
            supervisor = await running.enter_async_context(
                Supervisor(StackPorts.free(), log_dir=logs, report=False).running()
            )
        yield supervisor


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
