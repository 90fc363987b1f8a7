"""Speaking one Synthesize stream's clauses: a voice's engine run step by step, its audio resampled and cut into pieces
of at most 200 ms (each mark in the piece where it starts), sent to the stream's outbox, which waits while the client
has many pieces unread.

Every step of a local engine first takes a slot of the servicer's CpuScheduler (first clauses of utterances before
later ones); a cancel withdraws the utterance's waiting step. When a cloud provider fails after an utterance has
started to sound, the offline fallback voice speaks the rest of it (from the first word not yet sent) and the client
is told once (SynthesisDegraded); otherwise the failure ends the utterance with an UtteranceError."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np
from prometheus_client import Counter, Histogram

from infinitetalk_live_client.avatar.v1 import media_pb2, tts_pb2
from services.common.lru import Lru
from services.common.scrub import INTERNAL_ERROR, scrub
from services.common.stream import Outbox
from services.tts.engine import EngineAudio, SpeechEngine, VoiceInfo
from services.tts.remote import ProviderError
from services.tts.resample import resample
from services.tts.scheduler import CpuScheduler, Ticket
from services.tts.words import tokenize

log = logging.getLogger(__name__)

PIECE_MS = 200
# How many utterance ids a stream remembers (cancelled or failed ones; spoken, degraded and clause counts).
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

Voice = tuple[VoiceInfo, SpeechEngine]
Fail = Callable[[str, grpc.StatusCode, str], None]


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


class Speaker:
    """Speaks the clauses of one stream, one at a time, with `voice` (and `fallback` for a cloud voice's failures).
    `is_dropped` tells a cancelled or failed utterance (nothing more of it is sent); `fail` ends an utterance."""

    def __init__(
        self,
        outbox: Outbox[tts_pb2.SynthesizeResponse],
        voice: Voice,
        fallback: Voice | None,
        rate: int,
        scheduler: CpuScheduler,
        is_dropped: Callable[[str], bool],
        fail: Fail,
    ) -> None:
        self.outbox = outbox
        self.info, self.engine = voice
        self.fallback = fallback
        self.rate = rate
        self.piece_samples = max(1, rate * PIECE_MS // 1000)
        self.scheduler = scheduler
        self.is_dropped = is_dropped
        self.fail = fail
        # Clauses of each utterance taken so far (a clause's rank for the scheduler), and the step waiting for a slot.
        self.clause_counts: Lru[str, int] = Lru(DROPPED_MEMORY)
        self.waiting: tuple[str, Ticket] | None = None
        # Utterances that have sent audio (a failure after that degrades rather than fails), and those degraded.
        self.spoken: Lru[str, None] = Lru(DROPPED_MEMORY)
        self.degraded: Lru[str, None] = Lru(DROPPED_MEMORY)

    def withdraw(self, uid: str) -> None:
        """The utterance was dropped: its step waiting for a CPU slot never runs."""
        if self.waiting is not None and self.waiting[0] == uid:
            self.waiting[1].withdraw()

    async def speak(self, clause: media_pb2.TextClause) -> None:
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
                self.fail(uid, code, message)
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
                self.fail(uid, *_describe(fallback_error, info))
                return
        if outcome == "ok":
            done = tts_pb2.ClauseSynthesized(
                utterance_id=uid, clause_index=index, sample_count=state.offset, engine=info.label
            )
            self.outbox.send_nowait(tts_pb2.SynthesizeResponse(clause_done=done))
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
                    await self.outbox.send(response)  # waits while the client has many pieces unread
                    if state.first_audio is None:
                        state.first_audio = time.perf_counter() - state.started
                        FIRST_AUDIO_SECONDS.labels(engine.name).observe(state.first_audio)
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
        ticket = self.scheduler.ticket(state.rank, state.chunk_rank)
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
        self.outbox.send_nowait(tts_pb2.SynthesizeResponse(degraded=notice))

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


def _describe(error: BaseException, info: VoiceInfo) -> tuple[grpc.StatusCode, str]:
    """The utterance error for an engine failure: a provider's own code and (scrubbed) message, else INTERNAL. An
    unexpected exception's text may hold addresses or keys: it is scrubbed (services.common.scrub) before it goes."""
    if isinstance(error, ProviderError):
        return error.code, f"speech synthesis failed ({info.label}): {error.message}"
    return grpc.StatusCode.INTERNAL, f"speech synthesis failed ({info.label}): {scrub(str(error)) or INTERNAL_ERROR}"
