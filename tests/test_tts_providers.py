"""ElevenLabs and OpenAI voices through a real in-process TtsService, against local servers that speak each
provider's wire protocol (driven through the real SDKs by base URL): audio, word marks, errors, retries, the offline
fallback mid-utterance, and keys kept out of logs and messages."""

from __future__ import annotations

import logging

import grpc
import numpy as np
import pytest

from services.tts.elevenlabs import ElevenLabsEngine
from services.tts.espeak import EspeakEngine
from services.tts.openai_tts import OpenAITtsEngine
from services.tts.remote import RetryPolicy
from tests.fakes.elevenlabs_server import ElevenLabsServer, Failure
from tests.fakes.openai_tts_server import OpenAITtsServer
from tests.test_tts import clause, config, of_kind, run_stream, tts_stub

XI_KEY = "xi-test-SECRET456"
OPENAI_KEY = "sk-test-SECRET789"
TEXT = "Hello there. This is a live avatar speaking."
WORDS = ["Hello", "there.", "This", "is", "a", "live", "avatar", "speaking."]
POLICY = RetryPolicy(first_byte_timeout_s=3, stall_timeout_s=1, attempts=3, backoff_s=0.01)
FALLBACK = "espeak:en-us"


def engines(server, kind: str, key: str):
    if kind == "elevenlabs":
        provider = ElevenLabsEngine(key, base_url=server.url, voice_id="voice123", policy=POLICY)
    else:
        provider = OpenAITtsEngine(key, base_url=server.url, policy=POLICY)
    return [provider, EspeakEngine()]


def fake(kind: str, key: str, **kwargs):
    return ElevenLabsServer(api_key=key, **kwargs) if kind == "elevenlabs" else OpenAITtsServer(api_key=key, **kwargs)


VOICE = {"elevenlabs": "elevenlabs:voice123", "openai": "openai:alloy"}
KEY = {"elevenlabs": XI_KEY, "openai": OPENAI_KEY}


def utterance(responses, uid: str, rate: int = 24000):
    """All audio of an utterance in order (pieces contiguous per clause), its words, phonemes and clause labels."""
    samples, words, phonemes = [], [], []
    for piece in of_kind(responses, "audio", uid):
        assert piece.sample_rate_hz == rate
        samples.append(np.frombuffer(piece.pcm_s16le, dtype="<i2"))
        words.extend(piece.words)
        phonemes.extend(piece.phonemes)
    labels = [d.engine for d in of_kind(responses, "clause_done", uid)]
    audio = np.concatenate(samples).astype(np.float64) / 32768 if samples else np.zeros(0)
    return audio, words, phonemes, labels


def check_words(responses, uid: str, index: int, rate: int = 24000) -> list:
    """The clause's words are in order, non-empty and inside its audio, with word_index counting from 0."""
    pieces = [p for p in of_kind(responses, "audio", uid) if p.clause_index == index]
    (done,) = [d for d in of_kind(responses, "clause_done", uid) if d.clause_index == index]
    offset = 0
    for piece in pieces:
        assert piece.offset_samples == offset
        offset += len(piece.pcm_s16le) // 2
    assert offset == done.sample_count
    duration_us = offset * 1e6 / rate
    words = [w for p in pieces for w in p.words]
    previous = 0
    for i, word in enumerate(words):
        assert word.word_index == i
        assert previous <= word.start_us < word.end_us <= duration_us + 1
        previous = word.end_us
    return words


@pytest.mark.parametrize("kind", ["elevenlabs", "openai"])
async def test_provider_speaks_with_word_marks(kind: str) -> None:
    async with fake(kind, KEY[kind]) as server, tts_stub(engines(server, kind, KEY[kind])) as stub:
        responses = await run_stream(stub, [config(VOICE[kind]), clause("u1", 0, TEXT)])
    assert not of_kind(responses, "error")
    audio, _, phonemes, labels = utterance(responses, "u1")
    words = check_words(responses, "u1", 0)
    assert [w.word for w in words] == WORDS
    assert 1.5 < len(audio) / 24000 < 6 and float(np.sqrt(np.mean(audio**2))) > 0.03
    assert labels == [f"{kind}:voice123" if kind == "elevenlabs" else "openai:alloy"]
    (request,) = server.requests
    if kind == "elevenlabs":
        assert request.path == "/v1/text-to-speech/voice123/stream/with-timestamps"
        assert request.query["output_format"] == "pcm_24000"
        assert request.json["model_id"] == "eleven_flash_v2_5" and request.json["text"] == TEXT
        # Marks come from the alignment: each word sits on loud audio, letters become mouth-shape marks.
        loud = [np.sqrt(np.mean(audio[int(w.start_us * 0.024) : int(w.end_us * 0.024)] ** 2)) for w in words]
        assert min(loud) > 0.02
        assert sum(1 for p in phonemes if p.phoneme) >= 25
        assert sum(1 for p in phonemes if p.phoneme == "θ") == 2, "the th of 'there' and 'This': one mark each"
    else:
        assert request.json == {"model": "gpt-4o-mini-tts", "voice": "alloy", "input": TEXT, "response_format": "pcm"}
        assert not phonemes


async def test_elevenlabs_per_chunk_times_and_model_in_the_voice_name() -> None:
    server = ElevenLabsServer(api_key=XI_KEY, relative_times=True)
    async with server, tts_stub(engines(server, "elevenlabs", XI_KEY)) as stub:
        responses = await run_stream(stub, [config("elevenlabs:other9@eleven_turbo_v2_5", 16000), clause("u", 0, TEXT)])
    assert [w.word for w in check_words(responses, "u", 0, 16000)] == WORDS
    assert server.requests[0].json["model_id"] == "eleven_turbo_v2_5"
    assert server.requests[0].path.startswith("/v1/text-to-speech/other9/")


@pytest.mark.parametrize("kind", ["elevenlabs", "openai"])
async def test_unauthorized_is_a_clear_error_without_the_key(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = fake(kind, "the-right-key")
    async with server, tts_stub(engines(server, kind, KEY[kind]), fallback_voice="espeak-en-us") as stub:
        responses = await run_stream(stub, [config(VOICE[kind]), clause("u1", 0, TEXT), clause("u1", 1, "More.")])
    (error,) = of_kind(responses, "error")
    assert error.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert "401" in error.message and "API key" in error.message
    assert KEY[kind] not in error.message
    assert not of_kind(responses, "audio") and len(server.requests) == 1, "no retry, no fallback for a refused key"
    assert all(
        KEY[kind] not in record.getMessage() and KEY[kind] not in str(record.__dict__) for record in caplog.records
    )


@pytest.mark.parametrize("kind", ["elevenlabs", "openai"])
async def test_rate_limit_then_success_is_retried(kind: str) -> None:
    async with fake(kind, KEY[kind]) as server, tts_stub(engines(server, kind, KEY[kind])) as stub:
        server.fail(Failure(status=429, headers={"Retry-After": "0.05"}), Failure(status=503))
        responses = await run_stream(stub, [config(VOICE[kind]), clause("u1", 0, "Hello there.")])
    assert not of_kind(responses, "error")
    assert [w.word for w in check_words(responses, "u1", 0)] == ["Hello", "there."]
    assert len(server.requests) == 3


@pytest.mark.parametrize("kind", ["elevenlabs", "openai"])
async def test_failure_mid_utterance_degrades_to_the_offline_voice(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    text = "One two three four five six seven eight nine ten eleven twelve."
    later = "And the last clause."
    server = fake(kind, KEY[kind], chunk_s=0.2)
    async with server, tts_stub(engines(server, kind, KEY[kind]), fallback_voice="espeak-en-us") as stub:
        server.fail(Failure(drop_after_s=1.0))
        responses = await run_stream(stub, [config(VOICE[kind]), clause("u1", 0, text), clause("u1", 1, later)])
    assert not of_kind(responses, "error")
    words = check_words(responses, "u1", 0)
    assert [w.word for w in words] == text.split(), "the fallback speaks the words the provider did not"
    assert [w.word for w in check_words(responses, "u1", 1)] == later.split()
    _, _, _, labels = utterance(responses, "u1")
    assert labels == [FALLBACK, FALLBACK]
    assert len(server.requests) == 1, "later clauses of a degraded utterance go straight to the fallback"
    notices = of_kind(responses, "degraded")
    assert len(notices) == 1 and notices[0].utterance_id == "u1" and notices[0].fallback_engine == FALLBACK
    assert notices[0].code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert all(KEY[kind] not in r.getMessage() and KEY[kind] not in str(r.__dict__) for r in caplog.records)


async def test_second_clause_failing_degrades_and_a_stall_times_out() -> None:
    server = ElevenLabsServer(api_key=XI_KEY)
    async with server, tts_stub(engines(server, "elevenlabs", XI_KEY), fallback_voice="espeak-en-us") as stub:
        server.fail(Failure(), Failure(status=500), Failure(status=500), Failure(status=500))
        responses = await run_stream(
            stub, [config("elevenlabs:voice123"), clause("u1", 0, "First clause,"), clause("u1", 1, "second one.")]
        )
        assert [d.engine for d in of_kind(responses, "clause_done")] == ["elevenlabs:voice123", FALLBACK]
        assert of_kind(responses, "degraded")[0].code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert len(server.requests) == 4, "the 500s were retried before giving up on the provider"
        # A provider that stalls before any audio: a timeout error for the utterance, within the deadline.
        server.fail(Failure(stall_after_s=0.0))
        responses = await run_stream(stub, [config("elevenlabs:voice123"), clause("u2", 0, "Hello.")])
    (error,) = of_kind(responses, "error")
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


async def test_provider_setup_from_environment() -> None:
    from services.common.config import ConfigError
    from services.tts.registry import load_setup

    setup = load_setup({"TTS_PROVIDER": "elevenlabs", "ELEVENLABS_API_KEY": XI_KEY, "TTS_FALLBACK": "espeak"})
    assert setup.engines[0].name == "elevenlabs" and "espeak" in [e.name for e in setup.engines]
    assert setup.fallback_voice == "espeak-en-us"
    with pytest.raises(ConfigError, match="ELEVENLABS_API_KEY"):
        load_setup({"TTS_PROVIDER": "elevenlabs"})
    with pytest.raises(ConfigError, match="TTS_PROVIDER"):
        load_setup({"TTS_PROVIDER": "festival"})
    setup = load_setup({"TTS_ENGINE": "espeak", "OPENAI_API_KEY": OPENAI_KEY, "TTS_FALLBACK": "none"})
    assert [e.name for e in setup.engines] == ["espeak", "openai"] and setup.fallback_voice is None
