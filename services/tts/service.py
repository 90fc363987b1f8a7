"""The TtsService: one long-lived Synthesize stream per session turns clauses into audio with phoneme and word marks.

Per stream, a reader task takes requests as they come (so a cancel is seen at once, even while audio is being made)
and one worker task speaks the queued clauses strictly in arrival order. Audio goes out in pieces of at most 200 ms,
with each mark in the piece where it starts; after a cancel is read, nothing more of that utterance is sent.

Across streams, every step of a local engine (a sentence of a clause) first takes a slot of the servicer's
CpuScheduler (services/tts/scheduler.py): at most TTS_CONCURRENCY such steps at once, first clauses of utterances
before later ones, so simultaneous replies start one after another instead of all late. A cancel withdraws the
utterance's waiting step at once; cloud engines are not scheduled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc
import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from avatar.v1 import tts_pb2_grpc
from infinitetalk_live_client.avatar.v1 import media_pb2, tts_pb2
from services.common.errors import abort_invalid_argument, abort_resource_exhausted
from services.common.logs import session_id_var
from services.common.lru import Lru
from services.common.media import SAMPLE_RATE_HZ
from services.common.scrub import INTERNAL_ERROR, scrub
from services.tts.engine import EngineAudio, SpeechEngine, VoiceInfo
from services.tts.remote import ProviderError
from services.tts.resample import MAX_RATE_HZ, MIN_RATE_HZ, resample
from services.tts.scheduler import CpuScheduler, Ticket, concurrency_from_env
from services.tts.words import tokenize

log = logging.getLogger(__name__)

SERVICE_NAME = tts_pb2.DESCRIPTOR.services_by_name["TtsService"].full_name

MAX_CLAUSE_CHARS = 2000
MAX_QUEUED_CLAUSES = 64
MAX_ID_CHARS = 128
PIECE_MS = 200
# Audio pieces made but not yet taken by the client: the worker waits beyond this (about 13 s of audio).
MAX_BUFFERED_PIECES = 64
# Error responses the client has not read: beyond this the client is not reading and the stream is ended.
MAX_UNREAD_RESPONSES = 1024
# How many cancelled or failed utterance ids a stream remembers (their late clauses are ignored).
DROPPED_MEMORY = 4096

CLAUSES = Counter("tts_clauses_total", "Clauses handled, by engine and outcome", ["engine", "outcome"])
REAL_TIME_FACTOR = Histogram(
    "tts_synthesis_real_time_factor",
    "Time spent synthesising a clause divided by the duration of its audio",
    ["engine"],
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0),
)
FIRST_AUDIO_SECONDS = Histogram(
    "tts_first_audio_seconds",
    "From the start of a clause's synthesis to its first audio piece",
    ["engine"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0),
)
QUEUE_WAIT_SECONDS = Histogram(
    "tts_clause_queue_seconds",
    "How long a clause waited behind earlier clauses of its stream",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
STREAMS = Gauge("tts_streams_active", "Open Synthesize streams")


@dataclass(frozen=True)
class _Abort:
    """Ends the whole stream with a status (raised by the response loop, which owns the RPC context)."""

    code: grpc.StatusCode
    field: str
    message: str


@dataclass(frozen=True)
class _Raise:
    error: BaseException


_END = object()


@dataclass
class _Queued:
    clause: media_pb2.TextClause
    arrived: float


class TtsServicer(tts_pb2_grpc.TtsServiceServicer):
    """Serves Synthesize and ListVoices over the given engines; the first engine's first voice is the default."""

    def __init__(
        self,
        engines: Sequence[SpeechEngine],
        default_voice: str | None = None,
        *,
        max_clause_chars: int = MAX_CLAUSE_CHARS,
        max_queued_clauses: int = MAX_QUEUED_CLAUSES,
        fallback_voice: str | None = None,
        scheduler: CpuScheduler | None = None,
    ) -> None:
        self._engines = list(engines)
        # Shared by every stream: the CPU slots of the local engines (default: TTS_CONCURRENCY, else the CPUs).
        self.scheduler = scheduler or CpuScheduler(concurrency_from_env())
        self._voices: dict[str, tuple[VoiceInfo, SpeechEngine]] = {}
        for engine in engines:
            for info in engine.voices():
                self._voices.setdefault(info.name, (info, engine))
        if not self._voices:
            raise ValueError("no speech engine with a voice is available")
        self.default_voice = default_voice or next(iter(self._voices))
        if self.default_voice not in self._voices:
            raise ValueError(f"default voice {self.default_voice!r} is not one of: {', '.join(self._voices)}")
        self.max_clause_chars = max_clause_chars
        self.max_queued_clauses = max_queued_clauses
        if fallback_voice is not None and fallback_voice not in self._voices:
            raise ValueError(f"fallback voice {fallback_voice!r} is not one of: {', '.join(self._voices)}")
        # Speaks the rest of an utterance whose cloud provider failed mid-way (None: the utterance fails instead).
        self.fallback = self._voices[fallback_voice] if fallback_voice else None

    def lookup(self, name: str) -> tuple[VoiceInfo, SpeechEngine] | None:
        """A listed voice, or one an engine accepts by name pattern (e.g. any `elevenlabs:<voice_id>`)."""
        if name in self._voices:
            return self._voices[name]
        for engine in self._engines:
            info = engine.resolve_voice(name)
            if info is not None:
                return info, engine
        return None

    @property
    def voice_names(self) -> list[str]:
        return list(self._voices)

    async def ListVoices(
        self, request: tts_pb2.ListVoicesRequest, context: grpc.aio.ServicerContext
    ) -> tts_pb2.ListVoicesResponse:
        voices = [
            tts_pb2.Voice(name=info.name, language=info.language, engine=info.engine, description=info.description)
            for info, _ in self._voices.values()
        ]
        return tts_pb2.ListVoicesResponse(voices=voices, default_voice=self.default_voice)

    async def Synthesize(
        self, request_iterator: AsyncIterator[tts_pb2.SynthesizeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tts_pb2.SynthesizeResponse]:
        requests = request_iterator.__aiter__()
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            return
        if first.WhichOneof("request") != "config":
            await abort_invalid_argument(
                context, "config", "the first message of a Synthesize stream must be `config` (voice, sample rate)"
            )
        config = first.config
        voice = config.voice or self.default_voice
        found = self.lookup(voice)
        if found is None:
            await abort_invalid_argument(
                context, "config.voice", f"unknown voice {voice!r}; available voices: {', '.join(self._voices)}"
            )
        rate = config.sample_rate_hz or SAMPLE_RATE_HZ
        if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
            await abort_invalid_argument(
                context,
                "config.sample_rate_hz",
                f"sample_rate_hz {rate} is out of range: use {MIN_RATE_HZ}..{MAX_RATE_HZ} (0 means {SAMPLE_RATE_HZ})",
            )
        if config.session_id and not session_id_var.get():
            session_id_var.set(config.session_id[:64])
        info, engine = found
        stream = _Stream(self, info, engine, rate)
        STREAMS.inc()
        log.info("synthesize stream opened", extra={"voice": voice, "sample_rate_hz": rate})
        try:
            async for response in stream.run(requests, context):
                yield response
        finally:
            STREAMS.dec()
            log.info("synthesize stream closed", extra={"voice": voice})


class _Stream:
    """State of one Synthesize stream: the clause queue, the utterances to drop, and the two tasks."""

    def __init__(self, servicer: TtsServicer, info: VoiceInfo, engine: SpeechEngine, rate: int) -> None:
        self.servicer = servicer
        self.info = info
        self.engine = engine
        self.rate = rate
        self.piece_samples = max(1, rate * PIECE_MS // 1000)
        self.pending: deque[_Queued] = deque()
        self.wakeup = asyncio.Event()
        self.closed = False
        self.out: asyncio.Queue = asyncio.Queue()
        self.credits = asyncio.Semaphore(MAX_BUFFERED_PIECES)
        self.dropped: Lru[str, None] = Lru(DROPPED_MEMORY)
        # Clauses of each utterance taken so far (a clause's rank for the scheduler), and the step waiting for a slot.
        self.clause_counts: Lru[str, int] = Lru(DROPPED_MEMORY)
        self.waiting: tuple[str, Ticket] | None = None
        # Utterances that have sent audio (a failure after that degrades rather than fails), and those degraded.
        self.spoken: Lru[str, None] = Lru(DROPPED_MEMORY)
        self.degraded: Lru[str, None] = Lru(DROPPED_MEMORY)
        fallback = servicer.fallback
        self.fallback = fallback if engine.remote and fallback is not None and fallback[1] is not engine else None

    async def run(
        self, requests: AsyncIterator[tts_pb2.SynthesizeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tts_pb2.SynthesizeResponse]:
        reader = asyncio.create_task(self._read(requests), name="tts-reader")
        worker = asyncio.create_task(self._work(), name="tts-worker")
        try:
            while True:
                item = await self.out.get()
                if item is _END:
                    return
                if isinstance(item, _Abort):
                    if item.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        await abort_resource_exhausted(context, item.field, item.message)
                    await abort_invalid_argument(context, item.field, item.message)
                if isinstance(item, _Raise):
                    raise item.error
                response, is_audio = item
                if is_audio:
                    self.credits.release()
                kind = response.WhichOneof("response")
                if kind == "audio" and self.is_dropped(response.audio.utterance_id):
                    continue
                if kind == "clause_done" and self.is_dropped(response.clause_done.utterance_id):
                    continue
                yield response
        finally:
            reader.cancel()
            worker.cancel()
            await asyncio.gather(reader, worker, return_exceptions=True)

    # --- requests -------------------------------------------------------------------------------------------------

    async def _read(self, requests: AsyncIterator[tts_pb2.SynthesizeRequest]) -> None:
        try:
            async for request in requests:
                kind = request.WhichOneof("request")
                if kind == "clause":
                    self._accept(request.clause)
                elif kind == "cancel":
                    self._cancel(request.cancel.utterance_id)
                elif kind == "config":
                    self.out.put_nowait(
                        _Abort(grpc.StatusCode.INVALID_ARGUMENT, "config", "config may be sent only once, first")
                    )
                    return
                else:
                    self.out.put_nowait(
                        _Abort(grpc.StatusCode.INVALID_ARGUMENT, "request", "empty request: set clause or cancel")
                    )
                    return
        except asyncio.CancelledError:
            raise
        except Exception as error:  # e.g. an unparseable message: the interceptor turns it into INVALID_ARGUMENT
            self.out.put_nowait(_Raise(error))
            return
        self.closed = True
        self.wakeup.set()

    def _accept(self, clause: media_pb2.TextClause) -> None:
        uid = clause.utterance_id
        limit = self.servicer.max_clause_chars
        if not uid:
            self._fail("", grpc.StatusCode.INVALID_ARGUMENT, "clause.utterance_id is required")
        elif len(uid) > MAX_ID_CHARS:
            self._fail(uid, grpc.StatusCode.INVALID_ARGUMENT, f"utterance_id is longer than {MAX_ID_CHARS} characters")
        elif self.is_dropped(uid):
            log.debug("clause of a cancelled or failed utterance ignored", extra={"utterance_id": uid})
        elif clause.clause_index < 0:
            self._fail(uid, grpc.StatusCode.INVALID_ARGUMENT, f"clause_index {clause.clause_index} is negative")
        elif not clause.text.strip():
            self._fail(uid, grpc.StatusCode.INVALID_ARGUMENT, f"clause {clause.clause_index} has no text to speak")
        elif len(clause.text) > limit:
            self._fail(
                uid,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"clause {clause.clause_index} has {len(clause.text)} characters; the limit is {limit} per clause",
            )
        elif len(self.pending) >= self.servicer.max_queued_clauses:
            self._fail(
                uid,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many clauses waiting: at most {self.servicer.max_queued_clauses} may be queued per stream",
            )
        else:
            self.pending.append(_Queued(clause, time.perf_counter()))
            self.wakeup.set()

    def _cancel(self, uid: str) -> None:
        if not uid:
            return
        self._drop(uid)
        log.info("utterance cancelled", extra={"utterance_id": uid})

    def _fail(self, uid: str, code: grpc.StatusCode, message: str) -> None:
        """Ends one utterance with an UtteranceError; the stream goes on."""
        if self.out.qsize() > MAX_UNREAD_RESPONSES:
            self.out.put_nowait(
                _Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "responses", "the client is not reading responses")
            )
            return
        error = media_pb2.UtteranceError(utterance_id=uid, code=code.value[0], message=message)
        self.out.put_nowait((tts_pb2.SynthesizeResponse(error=error), False))
        CLAUSES.labels(self.engine.name, "rejected" if code != grpc.StatusCode.INTERNAL else "error").inc()
        log.info("utterance failed", extra={"utterance_id": uid, "code": code.name, "reason": message})
        if uid:
            self._drop(uid)

    def _drop(self, uid: str) -> None:
        self.dropped.put(uid, None)
        if any(q.clause.utterance_id == uid for q in self.pending):
            self.pending = deque(q for q in self.pending if q.clause.utterance_id != uid)
        if self.waiting is not None and self.waiting[0] == uid:
            self.waiting[1].withdraw()  # its step never runs

    def is_dropped(self, uid: str) -> bool:
        return uid in self.dropped

    # --- synthesis ------------------------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            while not self.pending:
                if self.closed:
                    self.out.put_nowait(_END)
                    return
                self.wakeup.clear()
                await self.wakeup.wait()
            queued = self.pending.popleft()
            QUEUE_WAIT_SECONDS.observe(time.perf_counter() - queued.arrived)
            await self._speak(queued.clause)

    async def _speak(self, clause: media_pb2.TextClause) -> None:
        uid, index = clause.utterance_id, clause.clause_index
        rank = self.clause_counts.get(uid, 0)
        self.clause_counts.put(uid, rank + 1)
        state = _ClauseState(started=time.perf_counter(), rank=rank)
        info, engine = (self.info, self.engine)
        if uid in self.degraded and self.fallback is not None:
            info, engine = self.fallback
        try:
            outcome = await self._run_engine(clause, clause.text, info, engine, state)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            code, message = _describe(error, info)
            started = uid in self.spoken or state.offset > 0
            if not (engine.remote and self.fallback is not None and started) or self.is_dropped(uid):
                if isinstance(error, ProviderError):
                    extra = {"utterance_id": uid, "clause_index": index, "reason": message}
                    log.warning("synthesis failed", extra=extra)
                else:
                    log.exception("synthesis failed", extra={"utterance_id": uid, "clause_index": index})
                self._fail(uid, code, message)
                return
            info, engine = self.fallback
            self._degrade(uid, code, message, info)
            written = [t for t in tokenize(clause.text) if t.is_word]
            rest = clause.text[written[state.word_index].start :] if state.word_index < len(written) else ""
            try:
                outcome = await self._run_engine(clause, rest, info, engine, state) if rest.strip() else "ok"
            except asyncio.CancelledError:
                raise
            except Exception as fallback_error:
                log.exception("fallback synthesis failed", extra={"utterance_id": uid, "clause_index": index})
                self._fail(uid, *_describe(fallback_error, info))
                return
        if outcome == "ok":
            done = tts_pb2.ClauseSynthesized(
                utterance_id=uid, clause_index=index, sample_count=state.offset, engine=info.label
            )
            self.out.put_nowait((tts_pb2.SynthesizeResponse(clause_done=done), False))
            if state.offset:
                REAL_TIME_FACTOR.labels(engine.name).observe(state.busy / (state.offset / self.rate))
        CLAUSES.labels(engine.name, outcome).inc()
        log.debug(
            "clause synthesised",
            extra={
                "utterance_id": uid,
                "clause_index": index,
                "outcome": outcome,
                "engine": info.label,
                "audio_s": round(state.offset / self.rate, 3),
                "busy_s": round(state.busy, 3),
                "first_audio_s": None if state.first_audio is None else round(state.first_audio, 3),
            },
        )

    async def _run_engine(
        self, clause: media_pb2.TextClause, text: str, info: VoiceInfo, engine: SpeechEngine, state: _ClauseState
    ) -> str:
        """Speaks `text` with one engine, continuing the clause's offset and word count in `state`; returns
        "ok" or "cancelled". Exceptions of the engine go up, with `state` telling how far it got."""
        uid = clause.utterance_id
        chunks = engine.synthesize(text, info.name)
        try:
            while True:
                if self.is_dropped(uid):
                    return "cancelled"
                ticket = None
                if not engine.remote:  # a local engine's step uses the CPU: it waits for its turn
                    ticket = await self._slot(uid, state)
                    if ticket is None:
                        return "cancelled"
                t0 = time.perf_counter()
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    return "ok"
                finally:
                    if ticket is not None:
                        ticket.release()
                state.chunk_rank += 1
                pcm = await asyncio.to_thread(resample, chunk.pcm, chunk.sample_rate_hz, self.rate)
                state.busy += time.perf_counter() - t0
                for response in self._pieces(clause, chunk, pcm, state.offset, state.word_index):
                    await self.credits.acquire()
                    if state.first_audio is None:
                        state.first_audio = time.perf_counter() - state.started
                        FIRST_AUDIO_SECONDS.labels(engine.name).observe(state.first_audio)
                    self.out.put_nowait((response, True))
                    self.spoken.put(uid, None)
                    if self.is_dropped(uid):
                        break
                state.offset += len(pcm)
                state.word_index += len(chunk.words)
        finally:
            with contextlib.suppress(Exception):
                await chunks.aclose()  # type: ignore[attr-defined]

    async def _slot(self, uid: str, state: _ClauseState) -> Ticket | None:
        """Waits for a CPU slot for the clause's next step: the ticket to release after it, or None when the
        utterance was cancelled meanwhile (the step must not run; nothing is held)."""
        ticket = self.servicer.scheduler.ticket(state.rank, state.chunk_rank)
        self.waiting = (uid, ticket)
        try:
            granted = await ticket.wait()
        finally:
            self.waiting = None
        if granted and self.is_dropped(uid):
            ticket.release()
            granted = False
        return ticket if granted else None

    def _degrade(self, uid: str, code: grpc.StatusCode, message: str, fallback: VoiceInfo) -> None:
        """Switches the rest of the utterance to the fallback voice and tells the client once."""
        if uid in self.degraded:
            return
        self.degraded.put(uid, None)
        log.warning(
            "voice provider failed mid-utterance; the fallback voice speaks the rest",
            extra={"utterance_id": uid, "code": code.name, "reason": message, "fallback": fallback.label},
        )
        CLAUSES.labels(self.engine.name, "degraded").inc()
        notice_type = getattr(tts_pb2, "SynthesisDegraded", None)
        if notice_type is None or "degraded" not in tts_pb2.SynthesizeResponse.DESCRIPTOR.fields_by_name:
            return  # protos without the notice: the log line above is all
        notice = notice_type(utterance_id=uid, code=code.value[0], message=message, fallback_engine=fallback.label)
        self.out.put_nowait((tts_pb2.SynthesizeResponse(degraded=notice), False))

    def _pieces(
        self, clause: media_pb2.TextClause, chunk: EngineAudio, pcm: np.ndarray, offset: int, word_index: int
    ) -> list[tts_pb2.SynthesizeResponse]:
        """Splits one chunk's audio into pieces of at most PIECE_MS; marks go with the piece where they start."""
        size = self.piece_samples
        count = -(-len(pcm) // size)
        if count == 0:
            return []
        duration = len(pcm) / self.rate
        base_us = offset * 1_000_000 / self.rate
        pieces = [
            tts_pb2.SynthesizedAudio(
                utterance_id=clause.utterance_id,
                clause_index=clause.clause_index,
                pcm_s16le=pcm[k * size : (k + 1) * size].astype("<i2").tobytes(),
                sample_rate_hz=self.rate,
                offset_samples=offset + k * size,
            )
            for k in range(count)
        ]

        def place(start_s: float, end_s: float) -> tuple[int, int, int]:
            start_s = min(max(start_s, 0.0), duration)
            end_s = min(max(end_s, start_s), duration)
            piece = min(int(start_s * self.rate) // size, count - 1)
            return piece, round(base_us + start_s * 1e6), round(base_us + end_s * 1e6)

        for symbol, start_s, end_s in chunk.phonemes:
            piece, start_us, end_us = place(start_s, end_s)
            pieces[piece].phonemes.append(media_pb2.PhonemeMark(phoneme=symbol, start_us=start_us, end_us=end_us))
        for i, (word, start_s, end_s) in enumerate(chunk.words):
            piece, start_us, end_us = place(start_s, end_s)
            pieces[piece].words.append(
                media_pb2.WordMark(word=word, start_us=start_us, end_us=end_us, word_index=word_index + i)
            )
        return [tts_pb2.SynthesizeResponse(audio=piece) for piece in pieces]


@dataclass
class _ClauseState:
    """How far a clause has got: audio samples and words sent, time spent, when the first audio went out."""

    started: float
    rank: int = 0  # the clause's position in its utterance, and the next engine step's in the clause (scheduling)
    chunk_rank: int = 0
    offset: int = 0
    word_index: int = 0
    busy: float = 0.0
    first_audio: float | None = None


def _describe(error: BaseException, info: VoiceInfo) -> tuple[grpc.StatusCode, str]:
    """The utterance error for an engine failure: a provider's own code and (scrubbed) message, else INTERNAL. An
    unexpected exception's text may hold addresses or keys: it is scrubbed (services.common.scrub) before it goes."""
    if isinstance(error, ProviderError):
        return error.code, f"speech synthesis failed ({info.label}): {error.message}"
    return grpc.StatusCode.INTERNAL, f"speech synthesis failed ({info.label}): {scrub(str(error)) or INTERNAL_ERROR}"
