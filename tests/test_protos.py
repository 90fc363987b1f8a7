"""The API contract: buf lint clean, generated code fresh and importable, no client streaming on the public API."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from infinitetalk_live_client.avatar.v1 import session_pb2

ROOT = Path(__file__).resolve().parent.parent


def test_buf_lint_passes():
    buf = shutil.which("buf") or str(Path(sys.executable).parent / "buf")
    result = subprocess.run([buf, "lint"], cwd=ROOT / "protos", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_code_is_fresh():
    result = subprocess.run(
        [sys.executable, str(ROOT / "protos" / "generate.py"), "--check"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_session_service_has_no_client_streaming():
    service = session_pb2.DESCRIPTOR.services_by_name["SessionService"]
    assert {m.name for m in service.methods} >= {
        "CreateSession",
        "Say",
        "Chat",
        "Interrupt",
        "EndSession",
        "WatchSession",
    }
    assert not any(m.client_streaming for m in service.methods)
    assert service.methods_by_name["WatchSession"].server_streaming


def test_peer_services_are_bidirectional():
    from avatar.v1 import llm_pb2, packager_pb2
    from infinitetalk_live_client.avatar.v1 import tts_pb2, video_pb2

    for module, service, method in (
        (llm_pb2, "LlmService", "Generate"),
        (tts_pb2, "TtsService", "Synthesize"),
        (video_pb2, "VideoService", "Render"),
        (packager_pb2, "PackagerService", "Publish"),
    ):
        rpc = module.DESCRIPTOR.services_by_name[service].methods_by_name[method]
        assert rpc.client_streaming and rpc.server_streaming, service
