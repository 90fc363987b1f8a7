"""The TtsService: one long-lived Synthesize stream per session turns clauses into audio with phoneme and word marks.

Per stream (services.common.stream.Duplex), a reader task takes requests as they come (so a cancel is seen at once,
even while audio is being made) and one worker task speaks the queued clauses strictly in arrival order
(services/tts/synthesis.py). Audio goes out in pieces of at most 200 ms, with each mark in the piece where it starts;
after a cancel is read, nothing more of that utterance is sent.

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
from prometheus_client import Gauge, Histogram

from avatar.v1 import tts_pb2_grpc
from infinitetalk_live_client.avatar.v1 import media_pb2, tts_pb2
from services.common.lru import Lru
from services.common.media import SAMPLE_RATE_HZ
from services.common.stream import Duplex, InvalidRequest, Outbox, bidi_stream
from services.tts.engine import SpeechEngine, VoiceInfo
from services.tts.resample import MAX_RATE_HZ, MIN_RATE_HZ
from services.tts.scheduler import CpuScheduler, concurrency_from_env
from services.tts.synthesis import CLAUSES, DROPPED_MEMORY, Speaker

log = logging.getLogger(__name__)

SERVICE_NAME = tts_pb2.DESCRIPTOR.services_by_name["TtsService"].full_name

MAX_CLAUSE_CHARS = 2000
MAX_QUEUED_CLAUSES = 64
MAX_ID_CHARS = 128
# Audio pieces made but not yet taken by the client: the worker waits beyond this (about 13 s of audio).
MAX_BUFFERED_PIECES = 64
# Other responses (errors, notices) the client has not read: beyond this it is not reading and the stream is ended.
MAX_UNREAD_RESPONSES = 1024

QUEUE_WAIT_SECONDS = Histogram(
    "tts_clause_queue_seconds",
    "How long a clause waited behind earlier clauses of its stream",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
STREAMS = Gauge("tts_streams_active", "Open Synthesize streams")


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

    @bidi_stream("Synthesize", hint=" (voice, sample rate)", empty_ok=True)
    async def Synthesize(
        self,
        config: tts_pb2.SynthesizeConfig,
        requests: AsyncIterator[tts_pb2.SynthesizeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[tts_pb2.SynthesizeResponse]:
        voice = config.voice or self.default_voice
        found = self.lookup(voice)
        if found is None:
            raise InvalidRequest(
                "config.voice", f"unknown voice {voice!r}; available voices: {', '.join(self._voices)}"
            )
        rate = config.sample_rate_hz or SAMPLE_RATE_HZ
        if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
            raise InvalidRequest(
                "config.sample_rate_hz",
                f"sample_rate_hz {rate} is out of range: use {MIN_RATE_HZ}..{MAX_RATE_HZ} (0 means {SAMPLE_RATE_HZ})",
            )
        stream = _Stream(self, found, rate)
        STREAMS.inc()
        log.info("synthesize stream opened", extra={"voice": voice, "sample_rate_hz": rate})
        try:
            async with contextlib.aclosing(stream.responses(requests)) as responses:
                async for response in responses:
                    yield response
        finally:
            STREAMS.dec()
            log.info("synthesize stream closed", extra={"voice": voice})


class _Stream(Duplex[tts_pb2.SynthesizeRequest, tts_pb2.SynthesizeResponse]):
    """One Synthesize stream's requests: the clause queue, the utterances to drop, and the worker that speaks."""

    def __init__(self, servicer: TtsServicer, voice: tuple[VoiceInfo, SpeechEngine], rate: int) -> None:
        super().__init__(Outbox(MAX_BUFFERED_PIECES, max_unread=MAX_UNREAD_RESPONSES))
        self.servicer = servicer
        self.engine = voice[1]
        self.pending: deque[_Queued] = deque()
        self.wakeup = asyncio.Event()
        self.closed = False
        self.dropped: Lru[str, None] = Lru(DROPPED_MEMORY)
        fallback = servicer.fallback
        usable = fallback if self.engine.remote and fallback is not None and fallback[1] is not self.engine else None
        self.speaker = Speaker(self.outbox, voice, usable, rate, servicer.scheduler, self.is_dropped, self._fail)

    async def start(self) -> None:
        self.spawn(self._work(), name="tts-worker")

    def admit(self, tag: object, response: tts_pb2.SynthesizeResponse) -> bool:
        kind = response.WhichOneof("response")
        if kind == "audio":
            return not self.is_dropped(response.audio.utterance_id)
        if kind == "clause_done":
            return not self.is_dropped(response.clause_done.utterance_id)
        return True

    # --- requests -------------------------------------------------------------------------------------------------

    async def receive(self, request: tts_pb2.SynthesizeRequest) -> None:
        kind = request.WhichOneof("request")
        if kind == "clause":
            self._accept(request.clause)
        elif kind == "cancel":
            self._cancel(request.cancel.utterance_id)
        elif kind == "config":
            raise InvalidRequest("config", "config may be sent only once, first")
        else:
            raise InvalidRequest("request", "empty request: set clause or cancel")

    async def half_closed(self) -> None:
        self.closed = True  # the worker ends the stream once the queued clauses are spoken
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
        error = media_pb2.UtteranceError(utterance_id=uid, code=code.value[0], message=message)
        if not self.outbox.send_nowait(tts_pb2.SynthesizeResponse(error=error)):
            return  # the client is not reading: the stream ends
        CLAUSES.labels(self.engine.name, "rejected" if code != grpc.StatusCode.INTERNAL else "error").inc()
        log.info("utterance failed", extra={"utterance_id": uid, "code": code.name, "reason": message})
        if uid:
            self._drop(uid)

    def _drop(self, uid: str) -> None:
        self.dropped.put(uid, None)
        if any(q.clause.utterance_id == uid for q in self.pending):
            self.pending = deque(q for q in self.pending if q.clause.utterance_id != uid)
        self.speaker.withdraw(uid)

    def is_dropped(self, uid: str) -> bool:
        return uid in self.dropped

    # --- synthesis ------------------------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            while not self.pending:
                if self.closed:
                    self.outbox.end()
                    return
                self.wakeup.clear()
                await self.wakeup.wait()
            queued = self.pending.popleft()
            QUEUE_WAIT_SECONDS.observe(time.perf_counter() - queued.arrived)
            await self.speaker.speak(queued.clause)
