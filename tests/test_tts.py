"""TtsService through a real in-process gRPC server: Piper and espeak-ng audio with word and phoneme marks,
cancellation, errors, limits; plus the resampler and the written-to-spoken word alignment."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest

from avatar.v1 import tts_pb2_grpc
from infinitetalk_live_client.avatar.v1 import media_pb2, tts_pb2
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
            yield tone(words)


def tone(words: list[str]) -> EngineAudio:
    """Half a second of 300 Hz tone per word at 16 kHz, with a word and a phoneme mark for each."""
    n = 8000 * len(words)
    pcm = (np.sin(np.arange(n) * 2 * np.pi * 300 / 16000) * 8000).astype(np.int16)
    spans = [(w, 0.5 * i + 0.05, 0.5 * i + 0.45) for i, w in enumerate(words)]
    return EngineAudio(pcm=pcm, sample_rate_hz=16000, phonemes=[("a", s, e) for _, s, e in spans], words=spans)


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


def test_piper_session_threads_sleep_instead_of_spinning() -> None:
    """onnxruntime's defaults take one intra-op thread per core and let idle threads spin (busy-wait), which costs
    more CPU than the synthesis itself: the voice's session must have few threads, none of them spinning."""
    import onnxruntime

    from services.tts.scheduler import threads_from_env

    options = real_engines()[0].session.get_session_options()
    # A session made with default options has no such entries at all (get_session_config_entry raises).
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == threads_from_env()
    assert options.inter_op_num_threads == 1
    assert options.execution_mode == onnxruntime.ExecutionMode.ORT_SEQUENTIAL


def test_piper_threads_from_environment() -> None:
    from services.common.config import ConfigError
    from services.tts.piper import session_options
    from services.tts.scheduler import threads_from_env

    assert 1 <= threads_from_env({}) <= 2
    assert threads_from_env({"TTS_THREADS": "1"}) == 1
    assert threads_from_env({"TTS_THREADS": " 3 "}) == 3
    for bad in ("two", "0", "-1"):
        with pytest.raises(ConfigError, match="TTS_THREADS"):
            threads_from_env({"TTS_THREADS": bad})
    options = session_options(1)
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


# --- CPU scheduling of local engines across streams ------------------------------------------------------------------


class RecordingEngine(SpeechEngine):
    """Records each sentence as its synthesis starts and how many sentences are being made at once; a sentence with a
    word "hold..." in it waits for `holds[word]` (set it to let it finish); `step_s` of sleep per sentence lets steps
    overlap."""

    name = "recording"

    def __init__(self, *, remote: bool = False, step_s: float = 0.0) -> None:
        self.remote = remote
        self.step_s = step_s
        self.started: list[str] = []
        self.active = 0
        self.most_active = 0
        self.holds: collections.defaultdict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)

    def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo("rec", "en", self.name, "test tone", "recording:tone")]

    async def synthesize(self, text: str, voice: str) -> AsyncIterator[EngineAudio]:
        for sentence in text.split("."):
            words = sentence.split()
            if not words:
                continue
            self.started.append(sentence.strip())
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            try:
                for word in words:
                    if word.startswith("hold"):
                        await self.holds[word].wait()
                await asyncio.sleep(self.step_s)
            finally:
                self.active -= 1
            yield tone(words)


async def until(predicate, what: str, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting until {what}")


async def open_call(stub):
    call = stub.Synthesize(metadata=METADATA)
    await call.write(config())
    return call


async def finish(call) -> list[tts_pb2.SynthesizeResponse]:
    await call.done_writing()
    return await read_all(call)


async def test_first_clauses_of_simultaneous_utterances_go_before_any_later_clause() -> None:
    from services.tts.scheduler import CpuScheduler

    engine = RecordingEngine()
    scheduler = CpuScheduler(1, age_boost_s=600)
    async with tts_stub([engine], scheduler=scheduler) as stub:
        blocker = await open_call(stub)
        await blocker.write(clause("busy", 0, "hold the only slot."))
        await until(lambda: engine.started == ["hold the only slot"], "the slot is taken")
        calls = {name: await open_call(stub) for name in "abc"}
        for name, call in calls.items():
            for index in range(3):
                text = f"{name} clause {index} sentence one. {name} clause {index} sentence two."
                await call.write(clause(f"say-{name}", index, text))
        await until(lambda: scheduler.waiting == 3, "each stream's first step waits")
        assert engine.started == ["hold the only slot"], "nothing else starts while the slot is taken"
        engine.holds["hold"].set()
        results = {name: await finish(call) for name, call in calls.items()}
        await finish(blocker)
    started = engine.started[1:]
    assert len(started) == 3 * 3 * 2
    # The three first sentences (each utterance's first audio) start before any other sentence of any utterance.
    assert set(started[:3]) == {f"{name} clause 0 sentence one" for name in "abc"}
    for name, responses in results.items():
        done = of_kind(responses, "clause_done", f"say-{name}")
        assert [d.clause_index for d in done] == [0, 1, 2], "each stream still speaks its clauses in order"
        mine = [s for s in started if s.startswith(f"{name} ")]
        assert mine == [f"{name} clause {i} sentence {n}" for i in range(3) for n in ("one", "two")]
    assert scheduler.running == 0 and scheduler.waiting == 0


async def test_a_new_utterance_goes_before_later_sentences_that_waited_longer() -> None:
    from services.tts.scheduler import CpuScheduler

    engine = RecordingEngine()
    scheduler = CpuScheduler(1, age_boost_s=600)
    async with tts_stub([engine], scheduler=scheduler) as stub:
        a, d, e = await open_call(stub), await open_call(stub), await open_call(stub)
        await a.write(clause("a", 0, "a hold. a second."))
        await until(lambda: engine.started == ["a hold"], "a takes the slot")
        await d.write(clause("d", 0, "d hold2."))
        await until(lambda: scheduler.waiting == 1, "d's first sentence waits")
        engine.holds["hold"].set()  # d gets the slot and keeps it; a's second sentence queues behind it
        await until(lambda: engine.started[-1:] == ["d hold2"] and scheduler.waiting == 1, "a's second sentence waits")
        await e.write(clause("e", 0, "e first."))
        await until(lambda: scheduler.waiting == 2, "e's first sentence waits too")
        engine.holds["hold2"].set()
        for call in (a, d, e):
            await finish(call)
    assert engine.started == ["a hold", "d hold2", "e first", "a second"], "first audio before later audio"


async def test_cancelled_utterance_leaves_the_queue_at_once_and_never_runs() -> None:
    from services.tts.scheduler import CpuScheduler

    engine = RecordingEngine()
    scheduler = CpuScheduler(1, age_boost_s=600)
    async with tts_stub([engine], scheduler=scheduler) as stub:
        blocker = await open_call(stub)
        await blocker.write(clause("busy", 0, "hold the only slot."))
        await until(lambda: engine.started == ["hold the only slot"], "the slot is taken")
        call = await open_call(stub)
        await call.write(clause("gone", 0, "never spoken. not at all."))
        await call.write(clause("gone", 1, "nor this."))
        await until(lambda: scheduler.waiting == 1, "the utterance's first step waits")
        await call.write(cancel("gone"))
        await call.write(clause("probe", 0, " "))  # its error proves the cancel before it was read
        assert (await call.read()).error.utterance_id == "probe"
        assert scheduler.waiting == 0, "the cancelled utterance's step left the queue when the cancel was read"
        await call.write(clause("next", 0, "spoken instead."))
        await until(lambda: scheduler.waiting == 1, "the next utterance waits for the slot")
        engine.holds["hold"].set()
        responses = await finish(call)
        await finish(blocker)
    assert engine.started == ["hold the only slot", "spoken instead"]
    assert not [r for r in responses if getattr(r, r.WhichOneof("response")).utterance_id == "gone"]
    assert [d.utterance_id for d in of_kind(responses, "clause_done")] == ["next"]
    assert scheduler.running == 0 and scheduler.waiting == 0


async def test_local_engine_runs_never_exceed_the_limit_and_cloud_engines_are_not_limited() -> None:
    from services.tts.scheduler import CpuScheduler

    engine = RecordingEngine(step_s=0.02)
    scheduler = CpuScheduler(2)
    async with tts_stub([engine], scheduler=scheduler) as stub:
        calls = [await open_call(stub) for _ in range(5)]
        for n, call in enumerate(calls):
            await call.write(clause(f"u{n}", 0, "one two. three."))
            await call.write(clause(f"u{n}", 1, "four. five six."))
        results = [await finish(call) for call in calls]
    assert engine.most_active == 2, "five streams share two slots"
    assert len(engine.started) == 5 * 4
    for n, responses in enumerate(results):
        assert [d.clause_index for d in of_kind(responses, "clause_done", f"u{n}")] == [0, 1]

    cloud = RecordingEngine(remote=True)
    scheduler = CpuScheduler(1)
    async with tts_stub([cloud], scheduler=scheduler) as stub:
        first, second = await open_call(stub), await open_call(stub)
        await first.write(clause("a", 0, "hold on."))
        await until(lambda: cloud.started == ["hold on"], "the first cloud clause is running")
        await second.write(clause("b", 0, "at the same time."))
        await until(lambda: "at the same time" in cloud.started, "a second cloud clause runs beside it")
        assert cloud.most_active == 2 and scheduler.running == 0
        cloud.holds["hold"].set()
        await finish(first)
        await finish(second)


async def test_a_stream_that_ends_gives_its_slot_back() -> None:
    from services.tts.scheduler import CpuScheduler

    engine = RecordingEngine()
    scheduler = CpuScheduler(1, age_boost_s=600)
    async with tts_stub([engine], scheduler=scheduler) as stub:
        dying = await open_call(stub)
        await dying.write(clause("busy", 0, "hold the only slot."))
        await until(lambda: scheduler.running == 1, "the slot is taken")
        other = await open_call(stub)
        await other.write(clause("u1", 0, "waiting for the slot."))
        await until(lambda: scheduler.waiting == 1, "the other stream waits")
        dying.cancel()
        responses = await finish(other)  # `hold` is never set: the slot must come back with the dead stream
    assert [d.utterance_id for d in of_kind(responses, "clause_done")] == ["u1"]
    assert scheduler.running == 0 and scheduler.waiting == 0


async def test_scheduler_order_age_boost_withdraw_and_cancel() -> None:
    from services.tts.scheduler import CpuScheduler

    now = [0.0]
    scheduler = CpuScheduler(1, age_boost_s=1.0, clock=lambda: now[0])
    holder = scheduler.ticket(0, 0)
    assert await holder.wait() and scheduler.running == 1
    tickets = {
        "second clause": scheduler.ticket(1, 0),
        "first clause, second sentence": scheduler.ticket(0, 1),
        "first clause": scheduler.ticket(0, 0),
        "another first clause": scheduler.ticket(0, 0),
        "third clause": scheduler.ticket(2, 0),
        "withdrawn": scheduler.ticket(0, 0),
    }
    tickets["withdrawn"].withdraw()
    assert not await tickets["withdrawn"].wait()
    assert scheduler.waiting == 5
    order = []
    running = holder
    while scheduler.waiting:
        running.release()
        (running,) = [t for t in tickets.values() if t.holds_slot]
        order.append(next(name for name, t in tickets.items() if t is running))
        assert await running.wait() and scheduler.running == 1
    running.release()
    assert order == [
        "first clause",
        "another first clause",
        "first clause, second sentence",
        "second clause",
        "third clause",
    ]
    assert scheduler.running == 0

    # A later clause that has waited age_boost_s goes before fresh first clauses (no starvation).
    holder = scheduler.ticket(0, 0)
    old = scheduler.ticket(3, 0)
    now[0] += 1.5
    fresh = scheduler.ticket(0, 0)
    holder.release()
    assert old.holds_slot and not fresh.holds_slot and scheduler.waiting == 1
    old.release()
    assert fresh.holds_slot
    fresh.release()

    # A task cancelled while waiting leaves the queue; one cancelled after its grant gives the slot back.
    holder = scheduler.ticket(0, 0)
    waiting = scheduler.ticket(0, 0)
    task = asyncio.create_task(waiting.wait())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert scheduler.waiting == 0
    granted_late = scheduler.ticket(0, 0)
    task = asyncio.create_task(granted_late.wait())
    await asyncio.sleep(0)
    holder.release()  # grants `granted_late`, then its task is cancelled before it runs
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert scheduler.running == 0 and scheduler.waiting == 0


def test_concurrency_from_environment() -> None:
    from services.common.config import ConfigError
    from services.tts.scheduler import concurrency_from_env, threads_from_env, usable_cpus

    # By default the voice's threads never outnumber the CPUs (at least one step at a time).
    assert concurrency_from_env({}) == max(1, usable_cpus() // threads_from_env({}))
    assert concurrency_from_env({"TTS_THREADS": "1"}) == usable_cpus()
    assert concurrency_from_env({"TTS_CONCURRENCY": " 3 "}) == 3
    for bad in ("many", "0", "-2"):
        with pytest.raises(ConfigError, match="TTS_CONCURRENCY"):
            concurrency_from_env({"TTS_CONCURRENCY": bad})
