"""Shared service plumbing: JSON logs carry the session id, config fails fast, bad bytes get INVALID_ARGUMENT."""

from __future__ import annotations

import json
import logging

import grpc
import pytest

from avatar.v1 import tts_pb2_grpc
from infinitetalk_live_client.avatar.v1 import tts_pb2
from services.common.config import ConfigError, env_int, env_str
from services.common.logs import JsonFormatter, session_id_var
from services.common.server import create_server


def test_json_logs_carry_session_id():
    formatter = JsonFormatter("test")
    token = session_id_var.set("abc123")
    try:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
        record.frame_index = 7
        entry = json.loads(formatter.format(record))
    finally:
        session_id_var.reset(token)
    assert entry["message"] == "hello world"
    assert entry["session_id"] == "abc123" and entry["service"] == "test" and entry["frame_index"] == 7


def test_config_fails_fast_with_the_variable_name(monkeypatch):
    monkeypatch.delenv("TTS_ADDR", raising=False)
    with pytest.raises(ConfigError, match="TTS_ADDR"):
        env_str("TTS_ADDR")
    monkeypatch.setenv("PORT", "abc")
    with pytest.raises(ConfigError, match="PORT"):
        env_int("PORT", 1)


class _Voices(tts_pb2_grpc.TtsServiceServicer):
    async def ListVoices(self, request, context):
        return tts_pb2.ListVoicesResponse(default_voice="x")


async def test_unparseable_request_is_invalid_argument_not_internal():
    server, port, _ = await create_server(
        "127.0.0.1:0", lambda s: tts_pb2_grpc.add_TtsServiceServicer_to_server(_Voices(), s), ["avatar.v1.TtsService"]
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            raw = channel.unary_unary("/avatar.v1.TtsService/ListVoices")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw(b"\xff\xff\xff")
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            ok = await tts_pb2_grpc.TtsServiceStub(channel).ListVoices(tts_pb2.ListVoicesRequest())
            assert ok.default_voice == "x"
    finally:
        await server.stop(0)
