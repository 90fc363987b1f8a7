"""LlmService.Generate: one long-lived stream per session that turns user turns into speakable clauses.

A session speaks one answer at a time, so each stream runs at most one generation: a new turn cancels the one in
progress, and `cancel` stops it at once. After a turn is cancelled (either way) nothing more is sent for it, not even
TurnDone. Provider deltas go through a ClauseSplitter as they arrive, so the first clause is out while the provider
is still writing. The stream remembers the conversation (user turns and the part of each reply actually sent),
bounded by a character budget.

What a failed turn tells the client is scrubbed here, where it leaves the service (services.common.scrub): a
provider's message keeps its words but loses credentials and internal addresses, and an unexpected exception becomes
a fixed sentence; its full, key-free detail is in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import grpc
from prometheus_client import Counter, Gauge, Histogram

from avatar.v1 import llm_pb2, llm_pb2_grpc
from infinitetalk_live_client.avatar.v1 import media_pb2
from services.common.clauses import ClauseSplitter
from services.common.errors import abort_failed_precondition
from services.common.scrub import INTERNAL_ERROR, redact_exception, scrub
from services.common.stream import Duplex, InvalidRequest, Outbox, bidi_stream
from services.llm.provider import ROLE_ASSISTANT, ROLE_USER, ChatProvider, ProviderError

log = logging.getLogger(__name__)

MAX_PERSONA_CHARS = 4000
MAX_TURN_CHARS = 4000
MAX_UTTERANCE_ID_CHARS = 128
MAX_MODEL_CHARS = 200
OUTBOX_SIZE = 256  # responses waiting for the client; when full, generation waits (backpressure)
MAX_ERROR_CHARS = 600  # a provider's sentence plus its own (already shortened) words
UNEXPECTED_FAILURE = f"the language model failed: {INTERNAL_ERROR}"

TIME_TO_FIRST_CLAUSE = Histogram(
    "llm_time_to_first_clause_seconds",
    "From a turn's arrival to its first clause being sent",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0),
)
TURNS = Counter("llm_turns_total", "Turns by outcome (completed, cancelled, superseded, failed, rejected)", ["outcome"])
CLAUSES = Counter("llm_clauses_total", "Clauses sent")
ACTIVE_STREAMS = Gauge("llm_active_streams", "Open Generate streams")


class History:
    """The conversation of one stream, oldest first, trimmed from the front to a character budget."""

    def __init__(self, budget_chars: int) -> None:
        self.budget_chars = budget_chars
        self._entries: deque[tuple[str, str]] = deque()
        self._chars = 0

    def add(self, role: str, text: str) -> None:
        self._entries.append((role, text))
        self._chars += len(text)
        while self._chars > self.budget_chars and len(self._entries) > 1:
            self._chars -= len(self._entries.popleft()[1])

    def snapshot(self) -> list[tuple[str, str]]:
        return list(self._entries)

    @property
    def chars(self) -> int:
        return self._chars


@dataclass(eq=False)
class _Turn:
    utterance_id: str
    received_at: float
    task: asyncio.Task | None = None
    sent: list[str] = field(default_factory=list)
    closed: bool = False  # done, failed or cancelled: nothing more goes out for it


def _error(utterance_id: str, code: grpc.StatusCode, message: str) -> llm_pb2.GenerateResponse:
    return llm_pb2.GenerateResponse(
        error=media_pb2.UtteranceError(utterance_id=utterance_id, code=code.value[0], message=message)
    )


async def _close_iterator(iterator: AsyncIterator[str]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


class _Conversation(Duplex[llm_pb2.GenerateRequest, llm_pb2.GenerateResponse]):
    """State of one Generate stream: its persona, memory and the turn in progress. A refused request is answered
    with an UtteranceError and the stream goes on; each response sent for a turn is tagged with it (`admit`)."""

    def __init__(self, servicer: LlmServicer, persona: str, provider: ChatProvider | None = None) -> None:
        super().__init__(Outbox(OUTBOX_SIZE))
        self.servicer = servicer
        self.persona = persona
        self.provider = provider or servicer.provider
        self.history = History(servicer.history_chars)
        self.current: _Turn | None = None

    # -- requests (the reader task) ------------------------------------------------------------------------------
    async def receive(self, request: llm_pb2.GenerateRequest) -> None:
        kind = request.WhichOneof("request")
        if kind == "turn":
            await self.start_turn(request.turn)
        elif kind == "cancel":
            self.cancel(request.cancel.utterance_id)
        elif kind == "config":
            await self.reject("", "config was already received; it may only be the first message (ignored)", False)
        else:
            await self.reject("", "empty GenerateRequest: set one of config, turn or cancel (ignored)", False)

    async def half_closed(self) -> None:
        """The client sent its last request: the running turn finishes, then the stream ends."""
        running = self.current.task if self.current is not None else None
        if running is not None:
            await asyncio.wait([running])  # unlike `await running`, never raises the turn's own cancellation
        self.outbox.end()

    async def reject(self, utterance_id: str, message: str, is_turn: bool = True) -> None:
        if is_turn:
            TURNS.labels("rejected").inc()
        log.info("request rejected", extra={"utterance_id": utterance_id, "reason": message})
        await self.outbox.send(_error(utterance_id, grpc.StatusCode.INVALID_ARGUMENT, message))

    async def start_turn(self, turn: llm_pb2.UserTurn) -> None:
        utterance_id = turn.utterance_id
        text = turn.text.strip()
        if not utterance_id:
            await self.reject("", "turn.utterance_id is empty; every turn needs an id")
            return
        if len(utterance_id) > MAX_UTTERANCE_ID_CHARS:
            await self.reject(
                utterance_id[:MAX_UTTERANCE_ID_CHARS],
                f"turn.utterance_id has {len(utterance_id)} characters; the limit is {MAX_UTTERANCE_ID_CHARS}",
            )
            return
        if not text:
            await self.reject(utterance_id, "turn.text is empty; send the words the user said")
            return
        if len(text) > MAX_TURN_CHARS:
            await self.reject(
                utterance_id, f"turn.text has {len(text)} characters; the limit is {MAX_TURN_CHARS} characters"
            )
            return
        if self.current is not None and not self.current.closed:
            self.stop(self.current, "superseded")
        self.history.add(ROLE_USER, text)
        state = _Turn(utterance_id, time.monotonic())
        self.current = state
        state.task = self.spawn(self.generate(state, self.history.snapshot()), name=f"llm-{utterance_id}")

    def cancel(self, utterance_id: str) -> None:
        turn = self.current
        if turn is not None and turn.utterance_id == utterance_id and not turn.closed:
            self.stop(turn, "cancelled")
        else:
            log.debug("cancel for no running turn", extra={"utterance_id": utterance_id})

    def stop(self, turn: _Turn, outcome: str) -> None:
        """Ends a turn now; what was already sent of its reply stays in memory, the rest is dropped."""
        turn.closed = True
        if turn.task is not None:
            turn.task.cancel()
        self._remember_reply(turn)
        TURNS.labels(outcome).inc()
        log.info("turn stopped", extra={"utterance_id": turn.utterance_id, "outcome": outcome, "sent": len(turn.sent)})
        if self.current is turn:
            self.current = None

    # -- generation (one task per turn) -------------------------------------------------------------------------
    async def generate(self, turn: _Turn, history: list[tuple[str, str]]) -> None:
        servicer = self.servicer
        splitter = ClauseSplitter()
        count = 0
        total = 0

        async def send_clauses(clauses: list[str]) -> None:
            nonlocal count
            for clause in clauses:
                message = media_pb2.TextClause(utterance_id=turn.utterance_id, clause_index=count, text=clause)
                await self.outbox.send(llm_pb2.GenerateResponse(clause=message), turn)
                count += 1

        try:
            async with asyncio.timeout(servicer.turn_timeout_s):
                replies = self.provider.stream_reply(history, self.persona)
                try:
                    async for delta in replies:
                        room = servicer.max_reply_chars - total
                        if len(delta) > room:
                            log.warning("reply cut at the length limit", extra={"utterance_id": turn.utterance_id})
                            await send_clauses(splitter.feed(delta[:room]))
                            break
                        total += len(delta)
                        await send_clauses(splitter.feed(delta))
                finally:
                    await _close_iterator(replies)
            await send_clauses(splitter.flush())
            done = llm_pb2.TurnDone(utterance_id=turn.utterance_id, clause_count=count)
            await self.outbox.send(llm_pb2.GenerateResponse(done=done), turn)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            message = f"the language model did not finish its reply within {servicer.turn_timeout_s:g} s"
            await self.outbox.send(_error(turn.utterance_id, grpc.StatusCode.DEADLINE_EXCEEDED, message), turn)
        except ProviderError as error:
            message = scrub(error.message, *self.provider.secrets(), limit=MAX_ERROR_CHARS)
            await self.outbox.send(_error(turn.utterance_id, error.code, message), turn)
        except Exception as error:
            detail = redact_exception(error, *self.provider.secrets())
            log.error("provider failed", extra={"utterance_id": turn.utterance_id, "error": detail})
            await self.outbox.send(_error(turn.utterance_id, grpc.StatusCode.INTERNAL, UNEXPECTED_FAILURE), turn)

    # -- responses (the response loop) --------------------------------------------------------------------------
    def admit(self, tag: object, response: llm_pb2.GenerateResponse) -> bool:
        """Book-keeping for a response about to go out (so memory holds what the client actually received); nothing
        more goes out for a turn that was stopped."""
        if not isinstance(tag, _Turn):
            return True
        turn = tag
        if turn.closed:
            return False
        kind = response.WhichOneof("response")
        if kind == "clause":
            if not turn.sent:
                TIME_TO_FIRST_CLAUSE.observe(time.monotonic() - turn.received_at)
            turn.sent.append(response.clause.text)
            CLAUSES.inc()
            return True
        turn.closed = True
        self._remember_reply(turn)
        outcome = "completed" if kind == "done" else "failed"
        TURNS.labels(outcome).inc()
        log.info(
            "turn " + outcome,
            extra={
                "utterance_id": turn.utterance_id,
                "clauses": len(turn.sent),
                "seconds": round(time.monotonic() - turn.received_at, 3),
            },
        )
        if self.current is turn:
            self.current = None
        return True

    def _remember_reply(self, turn: _Turn) -> None:
        if turn.sent:
            self.history.add(ROLE_ASSISTANT, " ".join(turn.sent))


class LlmServicer(llm_pb2_grpc.LlmServiceServicer):
    """Generate streams for any number of sessions. Each stream uses the default provider unless its config names
    another one of `providers` (and maybe a model); `unavailable` says why a known provider cannot be chosen."""

    def __init__(
        self,
        provider: ChatProvider,
        *,
        providers: Mapping[str, ChatProvider] | None = None,
        unavailable: Mapping[str, str] | None = None,
        history_chars: int = 8000,
        max_reply_chars: int = 4000,
        turn_timeout_s: float = 120.0,
    ) -> None:
        self.provider = provider
        self.providers = dict(providers or {provider.name: provider})
        self.unavailable = dict(unavailable or {})
        self.history_chars = history_chars
        self.max_reply_chars = max_reply_chars
        self.turn_timeout_s = turn_timeout_s

    async def _choose_provider(self, config: llm_pb2.GenerateConfig, context: grpc.aio.ServicerContext) -> ChatProvider:
        """The provider (and model) the stream's config asks for; aborts the stream when it cannot be had."""
        name = getattr(config, "provider", "").strip().lower()
        model = getattr(config, "model", "").strip()
        provider = self.provider
        if name:
            if name in self.unavailable:
                await abort_failed_precondition(
                    context, f"provider {name}", f"config.provider {name!r} is not available: {self.unavailable[name]}"
                )
            if name not in self.providers:
                known = sorted({*self.providers, *self.unavailable})
                raise InvalidRequest(
                    "config.provider", f"config.provider {name[:40]!r} is unknown; choose one of: {', '.join(known)}"
                )
            provider = self.providers[name]
        if model:
            if len(model) > MAX_MODEL_CHARS or not model.isprintable():
                raise InvalidRequest(
                    "config.model", f"config.model must be printable and at most {MAX_MODEL_CHARS} characters"
                )
            provider = provider.for_model(model)
        return provider

    @bidi_stream("Generate", empty_ok=True)
    async def Generate(
        self,
        config: llm_pb2.GenerateConfig,
        requests: AsyncIterator[llm_pb2.GenerateRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[llm_pb2.GenerateResponse]:
        persona = config.persona
        if len(persona) > MAX_PERSONA_CHARS:
            raise InvalidRequest(
                "config.persona",
                f"config.persona has {len(persona)} characters; the limit is {MAX_PERSONA_CHARS} characters",
            )
        provider = await self._choose_provider(config, context)
        conversation = _Conversation(self, persona, provider)
        ACTIVE_STREAMS.inc()
        log.info(
            "stream opened",
            extra={"persona_chars": len(persona), "provider": provider.name, "model": getattr(provider, "model", "")},
        )
        try:
            async with contextlib.aclosing(conversation.responses(requests)) as responses:
                async for response in responses:
                    yield response
        finally:
            ACTIVE_STREAMS.dec()
            log.info("stream closed")
