"""CPU scheduling of the local speech engines (Piper, espeak-ng) across every Synthesize stream of the process.

Each stream asks for a slot before every step of a local engine (one sentence or chunk of a clause: one `anext` of
`SpeechEngine.synthesize`) and gives it back as soon as the step is done, so at most `limit` local engine steps run at
once however many sessions speak (TTS_CONCURRENCY, default: the CPUs this process may use over TTS_THREADS). Without
it, six sessions that Say something together make six clauses at once on a two-core box, each with its own onnxruntime
threads, and all six first clauses come late; with it they are made one after another and each avatar starts as
early as the CPUs allow. Cloud engines (network-bound) do not use it.

When steps wait for a slot, a free slot goes to, in this order:

1. the step that has waited `age_boost_s` or longer, oldest first: no step waits for ever behind a stream of new
   utterances (later clauses have the earlier audio's playing time as slack, not unlimited time);
2. the step earliest in its utterance: smallest (clause rank, chunk rank), where the clause rank is the clause's
   position among its utterance's clauses (0 for the first) and the chunk rank the step's position in its clause;
   so every waiting utterance's first clause (first sentence first) before anyone's second clause;
3. the step that asked first.

A waiting step can be withdrawn (its utterance was cancelled): it leaves the queue at once and never runs. A step
whose task is cancelled (the stream ended) leaves the queue, or gives its slot back. Slots are counted, not bound to
threads: a step cancelled while its thread runs (asyncio.to_thread cannot stop it) frees its slot at once, and that
thread finishes its one sentence beside the next step."""

from __future__ import annotations

import asyncio
import enum
import itertools
import os
import time
from collections.abc import Callable, Mapping

from prometheus_client import Gauge, Histogram

from services.common.config import ConfigError

CONCURRENCY_ENV = "TTS_CONCURRENCY"
# A step waiting this long goes before every step that has not (later clauses must not starve behind new utterances).
AGE_BOOST_S = 1.0

WAIT_SECONDS = Histogram(
    "tts_engine_wait_seconds",
    "How long a step of a local engine (a sentence of a clause) waited for a CPU slot, by clause rank",
    ["clause"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0),
)
RUNNING = Gauge("tts_engine_steps_running", "Steps of local engines running now")
WAITING = Gauge("tts_engine_steps_waiting", "Steps of local engines waiting for a CPU slot")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which containers' cpusets restrict)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


DEFAULT_THREADS = 2
THREADS_ENV = "TTS_THREADS"


def threads_from_env(env: Mapping[str, str] | None = None) -> int:
    """Intra-op threads for Piper: TTS_THREADS if set (a positive integer), else DEFAULT_THREADS capped by the CPUs
    this process may run on."""
    env = os.environ if env is None else env
    raw = (env.get(THREADS_ENV) or "").strip()
    if not raw:
        return min(DEFAULT_THREADS, usable_cpus())
    try:
        threads = int(raw)
    except ValueError:
        raise ConfigError(f"{THREADS_ENV}={raw!r} is not an integer") from None
    if threads < 1:
        raise ConfigError(f"{THREADS_ENV}={threads} must be at least 1")
    return threads


def concurrency_from_env(env: Mapping[str, str] | None = None) -> int:
    """Local engine steps at once: TTS_CONCURRENCY if set (a positive integer), else as many as the usable CPUs hold
    at TTS_THREADS threads each (at least one): the voice never takes more cores than there are, so the video
    workers rendering speech on the same box keep theirs."""
    env = os.environ if env is None else env
    raw = (env.get(CONCURRENCY_ENV) or "").strip()
    if not raw:
        return max(1, usable_cpus() // threads_from_env(env))
    try:
        limit = int(raw)
    except ValueError:
        raise ConfigError(f"{CONCURRENCY_ENV}={raw!r} is not an integer") from None
    if limit < 1:
        raise ConfigError(f"{CONCURRENCY_ENV}={limit} must be at least 1")
    return limit


class _State(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    WITHDRAWN = "withdrawn"
    DONE = "done"


class Ticket:
    """One step's place in the queue, then its slot. `wait()`, run the step, `release()` (always, e.g. in finally)."""

    def __init__(self, scheduler: CpuScheduler, clause_rank: int, chunk_rank: int, seq: int, now: float) -> None:
        self._scheduler = scheduler
        self.clause_rank = clause_rank
        self.chunk_rank = chunk_rank
        self.seq = seq
        self.asked = now
        self.state = _State.WAITING
        self._granted: asyncio.Future[bool] | None = None

    @property
    def holds_slot(self) -> bool:
        return self.state is _State.RUNNING

    async def wait(self) -> bool:
        """True once the step holds a slot; False if it was withdrawn first (it must not run then)."""
        if self.state is not _State.WAITING:
            return self.state is _State.RUNNING
        self._granted = asyncio.get_running_loop().create_future()
        try:
            return await self._granted
        except asyncio.CancelledError:
            self.release()  # leaves the queue, or gives back a slot granted while the cancel was on its way
            raise

    def withdraw(self) -> None:
        """Leaves the queue if still waiting (its utterance was cancelled): `wait()` returns False. Else nothing."""
        if self.state is _State.WAITING:
            self._scheduler._leave(self)
            self._settle(_State.WITHDRAWN, False)

    def release(self) -> None:
        """Gives the slot back (or leaves the queue); safe to call more than once."""
        if self.state is _State.RUNNING:
            self.state = _State.DONE
            self._scheduler._finished()
        else:
            self.withdraw()

    def _settle(self, state: _State, granted: bool) -> None:
        self.state = state
        if self._granted is not None and not self._granted.done():
            self._granted.set_result(granted)


class CpuScheduler:
    """At most `limit` tickets running; waiting ones granted by age boost, then rank, then arrival (module doc)."""

    def __init__(
        self, limit: int, *, age_boost_s: float = AGE_BOOST_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit {limit} must be at least 1")
        self.limit = limit
        self.age_boost_s = age_boost_s
        self._clock = clock
        self._seq = itertools.count()
        self._waiting: list[Ticket] = []
        self.running = 0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def ticket(self, clause_rank: int, chunk_rank: int) -> Ticket:
        """Asks for a slot for one step; granted at once when one is free (then `wait()` returns True at once)."""
        ticket = Ticket(self, clause_rank, chunk_rank, next(self._seq), self._clock())
        self._waiting.append(ticket)
        WAITING.inc()
        self._dispatch()
        return ticket

    def _key(self, ticket: Ticket, now: float) -> tuple[int, int, int, int]:
        if now - ticket.asked >= self.age_boost_s:
            return (0, 0, 0, ticket.seq)
        return (1, ticket.clause_rank, ticket.chunk_rank, ticket.seq)

    def _dispatch(self) -> None:
        now = self._clock()
        while self.running < self.limit and self._waiting:
            best = min(self._waiting, key=lambda t: self._key(t, now))
            self._leave(best)
            self.running += 1
            RUNNING.inc()
            WAIT_SECONDS.labels(str(best.clause_rank) if best.clause_rank < 3 else "3+").observe(now - best.asked)
            best._settle(_State.RUNNING, True)

    def _leave(self, ticket: Ticket) -> None:
        self._waiting.remove(ticket)
        WAITING.dec()

    def _finished(self) -> None:
        self.running -= 1
        RUNNING.dec()
        self._dispatch()
