"""TtsService through a real in-process gRPC server: Piper and espeak-ng audio with word and phoneme marks,
cancellation, errors, limits; plus the resampler and the written-to-spoken word alignment."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest

from avatar.v1 import media_pb2, tts_pb2, tts_pb2_grpc
from services.common.server import create_server
from services.tts.engine import EngineAudio, EngineError, SpeechEngine, VoiceInfo
from services.tts.resample import resample
from services.tts.service import SERVICE_NAME, TtsServicer
from services.tts.words import align_sequences, tokenize

HELLO = "Hello there. This is a live avatar speaking."
HELLO_WORDS = ["Hello", "there.", "This", "is", "a", "live", "avatar", "speaking."]  # as written, punctuation kept
METADATA = (("x-session-id", "test-session"),)


@functools.cache
def real_engines() -> tuple[SpeechEngine, ...]:
    """Piper and espeak-ng, loaded once for the whole test run (loading Piper takes about a second)."""
    from services.tts.espeak import EspeakEngine
    from services.tts.piper import PiperEngine

    return PiperEngine(), EspeakEngine()


class FakeEngine(SpeechEngine):
    """A tone per sentence at 16 kHz; waits on `gate` before each sentence; "explode" in the text fails."""

    name = "fake"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()

    def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo("fake", "en", self.name, "test tone", "fake:tone")]

    async def synthesize(self, text: str, voice: str) -> AsyncIterator[EngineAudio]:
        if "explode" in text:
            raise EngineError("the fake engine exploded")
        for sentence in text.split("."):
            words = sentence.split()
            if not words:
                continue
            await self.gate.wait()
            n = 8000 * len(words)
            pcm = (np.sin(np.arange(n) * 2 * np.pi * 300 / 16000) * 8000).astype(np.int16)
            spans = [(w, 0.5 * i + 0.05, 0.5 * i + 0.45) for i, w in enumerate(words)]
            yield EngineAudio(pcm=pcm, sample_rate_hz=16000, phonemes=[("a", s, e) for _, s, e in spans], words=spans)


@contextlib.asynccontextmanager
async def tts_stub(engines, **kwargs) -> AsyncIterator[tts_pb2_grpc.TtsServiceStub]:
    servicer = TtsServicer(list(engines), **kwargs)

    def register(server: grpc.aio.Server) -> None:
        tts_pb2_grpc.add_TtsServiceServicer_to_server(servicer, server)

    server, port, _health = await create_server("127.0.0.1:0", register, [SERVICE_NAME])
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield tts_pb2_grpc.TtsServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(0)


def config(voice: str = "", rate: int = 0) -> tts_pb2.SynthesizeRequest:
    return tts_pb2.SynthesizeRequest(
        config=tts_pb2.SynthesizeConfig(session_id="test-session", voice=voice, sample_rate_hz=rate)
    )


def clause(uid: str, index: int, text: str) -> tts_pb2.SynthesizeRequest:
    return tts_pb2.SynthesizeRequest(clause=media_pb2.TextClause(utterance_id=uid, clause_index=index, text=text))


def cancel(uid: str) -> tts_pb2.SynthesizeRequest:
    return tts_pb2.SynthesizeRequest(cancel=media_pb2.CancelUtterance(utterance_id=uid))


async def run_stream(stub, requests: list[tts_pb2.SynthesizeRequest]) -> list[tts_pb2.SynthesizeResponse]:
    """Sends all requests, half-closes, and returns every response until the server ends the stream."""
    call = stub.Synthesize(metadata=METADATA)
    for request in requests:
        await call.write(request)
    await call.done_writing()
    return await read_all(call)


async def read_all(call) -> list[tts_pb2.SynthesizeResponse]:
    responses = []
    while (response := await call.read()) is not grpc.aio.EOF:
        responses.append(response)
    return responses


def of_kind(responses, kind: str, uid: str | None = None) -> list:
    items = [getattr(r, kind) for r in responses if r.WhichOneof("response") == kind]
    return [i for i in items if uid is None or i.utterance_id == uid]


def check_clause_audio(responses, uid: str, rate: int, engine_label: str) -> tuple[np.ndarray, list, list]:
    """Checks the structural promises of one clause's responses; returns its samples, word and phoneme marks."""
    pieces = of_kind(responses, "audio", uid)
    (done,) = of_kind(responses, "clause_done", uid)
    assert done.engine == engine_label
    assert pieces, "no audio"
    offset = 0
    samples = []
    words, phonemes = [], []
    for piece in pieces:
        assert piece.sample_rate_hz == rate
        assert piece.offset_samples == offset, "pieces must be contiguous, offsets relative to the clause start"
        count = len(piece.pcm_s16le) // 2
        assert 0 < count <= rate // 5, "pieces are at most 200 ms"
        for mark in [*piece.words, *piece.phonemes]:
            start_sample = mark.start_us * rate / 1e6
            assert offset - 1 <= start_sample < offset + count + 1, "a mark goes in the piece where it starts"
        words.extend(piece.words)
        phonemes.extend(piece.phonemes)
        samples.append(np.frombuffer(piece.pcm_s16le, dtype="<i2"))
        offset += count
    assert offset == done.sample_count
    audio = np.concatenate(samples).astype(np.float64) / 32768
    duration_us = len(audio) * 1e6 / rate
    previous_end = 0
    for i, word in enumerate(words):
        assert word.word_index == i
        assert previous_end <= word.start_us < word.end_us <= duration_us + 1, "words in order, inside the audio"
        previous_end = word.end_us
    assert phonemes and any(p.phoneme for p in phonemes)
    previous_start = -1
    for mark in phonemes:
        assert previous_start <= mark.start_us <= mark.end_us <= duration_us + 1
        previous_start = mark.start_us
    return audio, words, phonemes


def rms(audio: np.ndarray, rate: int, start_us: int, end_us: int) -> float:
    segment = audio[int(start_us * rate / 1e6) : int(end_us * rate / 1e6)]
    return float(np.sqrt(np.mean(segment**2))) if len(segment) else 0.0


def check_marks_on_speech(audio: np.ndarray, rate: int, words, phonemes) -> None:
    """Words sit where the audio is loud: energy inside word spans well above that of the silence marks."""
    inside = np.mean([rms(audio, rate, w.start_us, w.end_us) for w in words])
    silences = [p for p in phonemes if not p.phoneme and p.end_us - p.start_us > 5_000]
    assert silences, "sentence edges are marked as silence"
    quiet = np.mean([rms(audio, rate, p.start_us, p.end_us) for p in silences])
    assert inside > 0.03
    assert inside > 4 * quiet
    # Word edges are phoneme edges (both come from the engine's timing), and speech ends with the last word.
    starts = np.array([p.start_us for p in phonemes if p.phoneme])
    ends = np.array([p.end_us for p in phonemes if p.phoneme])
    for word in words:
        assert np.min(np.abs(starts - word.start_us)) <= 1_000, f"{word.word} does not start on a phoneme"
        assert np.min(np.abs(ends - word.end_us)) <= 1_000, f"{word.word} does not end on a phoneme"
    assert abs(words[-1].end_us - ends.max()) <= 1_000


async def test_piper_speaks_a_clause_with_word_and_phoneme_marks() -> None:
    async with tts_stub(real_engines()) as stub:
        responses = await run_stream(stub, [config(), clause("u1", 0, HELLO)])
    assert not of_kind(responses, "error")
    audio, words, phonemes = check_clause_audio(responses, "u1", 24000, "piper:joe-us")
    assert 1.5 < len(audio) / 24000 < 6.0
    assert float(np.sqrt(np.mean(audio**2))) > 0.03, "audio is well above silence"
    assert [w.word for w in words] == HELLO_WORDS
    check_marks_on_speech(audio, 24000, words, phonemes)
    # Piper starts each sentence with a little silence: it is kept, and the first word starts after it.
    assert words[0].start_us > 0
    assert rms(audio, 24000, words[0].start_us, words[0].end_us) > 10 * rms(audio, 24000, 0, words[0].start_us)


async def test_espeak_voice_at_another_sample_rate() -> None:
    async with tts_stub(real_engines()) as stub:
        responses = await run_stream(stub, [config("espeak-en-us", 16000), clause("u1", 3, HELLO)])
    audio, words, phonemes = check_clause_audio(responses, "u1", 16000, "espeak:en-us")
    assert all(p.clause_index == 3 for p in of_kind(responses, "audio"))
    assert [w.word for w in words] == HELLO_WORDS
    assert float(np.sqrt(np.mean(audio**2))) > 0.03
    check_marks_on_speech(audio, 16000, words, phonemes)


async def test_written_words_get_times_when_speech_differs_from_text() -> None:
    # "3.5" is spoken as three words, "in the" as one: every written word still gets its own span, in order.
    text = "It costs 3.5 million, in the end."
    async with tts_stub(real_engines()) as stub:
        responses = await run_stream(stub, [config("joe"), clause("u1", 0, text), clause("u2", 0, text)])
    for uid in ("u1", "u2"):
        _audio, words, _ = check_clause_audio(responses, uid, 24000, "piper:joe-us")
        assert [w.word for w in words] == ["It", "costs", "3.5", "million,", "in", "the", "end."]
        durations = {w.word: w.end_us - w.start_us for w in words}
        assert durations["3.5"] > 2 * durations["It"]


async def test_cancel_stops_an_utterance_and_later_utterances_still_come() -> None:
    long_text = " ".join(f"This is sentence number {n} of a long answer that the user interrupts." for n in range(8))
    async with tts_stub(real_engines()) as stub:
        call = stub.Synthesize(metadata=METADATA)
        await call.write(config())
        await call.write(clause("long", 0, long_text))
        await call.write(clause("long", 1, "And this clause was queued behind it."))
        responses = []
        while True:
            response = await call.read()
            responses.append(response)
            if response.WhichOneof("response") == "audio":
                break
        await call.write(cancel("long"))
        await call.write(clause("next", 0, "A new answer."))
        await call.done_writing()
        responses += await read_all(call)
    assert not of_kind(responses, "error")
    assert not of_kind(responses, "clause_done", "long"), "a cancelled utterance never completes"
    spoken = [w for piece in of_kind(responses, "audio", "long") for w in piece.words]
    assert len(spoken) < len(tokenize(long_text)), "audio stopped before the end of the cancelled clause"
    _, words, _ = check_clause_audio(responses, "next", 24000, "piper:joe-us")
    assert [w.word for w in words] == ["A", "new", "answer."]
    kinds = [(r.WhichOneof("response"), getattr(r, r.WhichOneof("response")).utterance_id) for r in responses]
    first_next = kinds.index(("audio", "next"))
    assert ("audio", "long") not in kinds[first_next:], "nothing of the cancelled utterance after the next one"


async def test_client_cancelling_the_stream_leaves_no_work_behind() -> None:
    def stream_tasks() -> list[asyncio.Task]:
        return [t for t in asyncio.all_tasks() if t.get_name() in ("tts-reader", "tts-worker") and not t.done()]

    async with tts_stub(real_engines()) as stub:
        call = stub.Synthesize(metadata=METADATA)
        await call.write(config())
        await call.write(clause("u1", 0, " ".join(["A long answer that nobody will hear to the end."] * 10)))
        while (await call.read()).WhichOneof("response") != "audio":
            pass
        assert stream_tasks()
        call.cancel()
        for _ in range(500):
            if not stream_tasks():
                break
            await asyncio.sleep(0.01)
        assert not stream_tasks(), "the stream's reader and worker tasks end with the call"


async def test_cancel_drops_queued_clauses_and_ignores_late_ones() -> None:
    engine = FakeEngine()
    engine.gate.clear()
    async with tts_stub([engine]) as stub:
        call = stub.Synthesize(metadata=METADATA)
        await call.write(config())
        await call.write(clause("first", 0, "one two."))  # the worker waits on the gate with this one
        await call.write(clause("gone", 0, "three four."))
        await call.write(clause("gone", 1, "five."))
        await call.write(cancel("gone"))
        await call.write(clause("gone", 2, "six."))
        await call.write(clause("probe", 0, "   "))  # its error proves the cancel before it was read
        probe = await call.read()
        assert probe.error.utterance_id == "probe"
        engine.gate.set()
        await call.write(clause("after", 0, "seven eight. nine."))
        await call.done_writing()
        responses = await read_all(call)
    assert not [r for r in responses if getattr(r, r.WhichOneof("response")).utterance_id == "gone"]
    assert [d.utterance_id for d in of_kind(responses, "clause_done")] == ["first", "after"]
    audio, words, _ = check_clause_audio(responses, "after", 24000, "fake:tone")
    # Two fake sentences of 2 and 1 words at 16 kHz: exactly 1.5 s, so 36000 samples at 24 kHz.
    assert len(audio) == 36000
    assert [(w.word, w.start_us, w.end_us) for w in words] == [
        ("seven", 50_000, 450_000),
        ("eight", 550_000, 950_000),
        ("nine", 1_050_000, 1_450_000),
    ]


async def test_bad_config_is_rejected_clearly() -> None:
    async with tts_stub(real_engines()) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await run_stream(stub, [clause("u1", 0, "Hi.")])
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "config" in error.value.details()

        with pytest.raises(grpc.aio.AioRpcError) as error:
            await run_stream(stub, [config("nobody")])
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "nobody" in error.value.details()
        assert "joe" in error.value.details() and "espeak-en-us" in error.value.details()

        with pytest.raises(grpc.aio.AioRpcError) as error:
            await run_stream(stub, [config("joe", 96000)])
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "8000..48000" in error.value.details()

        with pytest.raises(grpc.aio.AioRpcError) as error:
            await run_stream(stub, [config(), config()])
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_bad_clauses_fail_their_utterance_and_the_stream_goes_on() -> None:
    async with tts_stub(real_engines()) as stub:
        responses = await run_stream(
            stub,
            [
                config("espeak-en-us"),
                clause("empty", 0, "  \n "),
                clause("huge", 0, "word " * 500),
                clause("huge", 1, "A later clause of a failed utterance is ignored."),
                clause("", 0, "No utterance id."),
                clause("ok", 0, "Still speaking."),
            ],
        )
    errors = {e.utterance_id: e for e in of_kind(responses, "error")}
    assert set(errors) == {"empty", "huge", ""}
    assert all(e.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] for e in errors.values())
    assert "no text" in errors["empty"].message
    assert "2000" in errors["huge"].message and "2500" in errors["huge"].message
    assert not of_kind(responses, "audio", "huge")
    _, words, _ = check_clause_audio(responses, "ok", 24000, "espeak:en-us")
    assert [w.word for w in words] == ["Still", "speaking."]


async def test_queue_limit_and_engine_errors_are_utterance_errors() -> None:
    engine = FakeEngine()
    engine.gate.clear()
    async with tts_stub([engine], max_queued_clauses=2) as stub:
        call = stub.Synthesize(metadata=METADATA)
        await call.write(config())
        await call.write(clause("a", 0, "one."))  # taken by the worker, waiting on the gate
        await call.write(clause("probe", 0, ""))  # once its error is back, the worker has taken "a"
        assert (await call.read()).error.utterance_id == "probe"
        await call.write(clause("b", 0, "please explode."))
        await call.write(clause("c", 0, "two."))
        await call.write(clause("d", 0, "three."))  # a and c are waiting: over the limit of 2
        rejected = await call.read()
        engine.gate.set()
        await call.done_writing()
        responses = [rejected] + await read_all(call)
    errors = {e.utterance_id: e for e in of_kind(responses, "error")}
    assert rejected.error.utterance_id == "d"
    assert errors["d"].code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert "2" in errors["d"].message
    assert errors["b"].code == grpc.StatusCode.INTERNAL.value[0]
    assert "exploded" in errors["b"].message
    assert [d.utterance_id for d in of_kind(responses, "clause_done")] == ["a", "c"]


async def test_list_voices() -> None:
    async with tts_stub(real_engines()) as stub:
        reply = await stub.ListVoices(tts_pb2.ListVoicesRequest())
    voices = {v.name: v for v in reply.voices}
    assert reply.default_voice == "joe"
    assert voices["joe"].engine == "piper" and voices["joe"].language == "en-US"
    assert voices["espeak-en-us"].engine == "espeak"
    assert all(v.description for v in reply.voices)


def test_resample_keeps_length_and_signal() -> None:
    for src, dst in [(22050, 24000), (22050, 8000), (16000, 48000)]:
        n = src + 123
        pcm = (np.sin(np.arange(n) * 2 * np.pi * 440 / src) * 12000).astype(np.int16)
        out = resample(pcm, src, dst)
        assert len(out) == round(n * dst / src)
        reference = np.sin(np.arange(len(out)) * 2 * np.pi * 440 / dst) * 12000
        middle = slice(len(out) // 10, -len(out) // 10)
        assert np.max(np.abs(out[middle] - reference[middle])) < 20


def test_alignment_handles_merged_and_expanded_words() -> None:
    # Written "in the end 2024" phonemised word by word, against what was spoken ("in the" merged, 2024 as 4 words).
    expected = ["ɪn", "ðə", "ɛnd", "tuː", "θaʊzənd", "twɛnti", "fɔːɹ"]  # noqa: RUF001
    actual = ["ɪnðə", "ɛnd", "tuː", "θaʊzənd", "twɛnti", "fɔːɹ"]  # noqa: RUF001
    ranges = align_sequences(expected, actual)
    assert ranges[0][0] == 0 and ranges[1][1] == 1 and ranges[0][1] == ranges[1][0]
    assert ranges[2:] == [(1.0, 2.0), (2.0, 3.0), (3.0, 4.0), (4.0, 5.0), (5.0, 6.0)]


def test_engine_choice_and_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.common.config import ConfigError
    from services.tts import piper
    from services.tts.registry import load_engines

    assert [e.name for e in load_engines("espeak")] == ["espeak"]
    with pytest.raises(ConfigError, match="TTS_ENGINE"):
        load_engines("festival")

    def broken(self, *args, **kwargs) -> None:
        raise RuntimeError("model file missing")

    monkeypatch.setattr(piper.PiperEngine, "__init__", broken)
    engines = load_engines("piper")
    assert [e.name for e in engines] == ["espeak"]
    assert TtsServicer(engines).default_voice == "espeak-en-us"
