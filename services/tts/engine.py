"""The one capability every speech vendor provides: text in, audio with phoneme and word timings out.

Vendors (Piper, espeak-ng, later cloud APIs) are small subclasses of `SpeechEngine`; the gRPC service only sees this
interface, so adding a vendor never touches the streaming, cancellation or resampling code."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np

# (symbol, start_s, end_s); symbol "" marks silence (a pause at punctuation or the edges of a sentence).
PhonemeSpan = tuple[str, float, float]
# (word as written in the text, start_s, end_s).
WordSpan = tuple[str, float, float]


class EngineError(RuntimeError):
    """Synthesis failed for reasons of the engine (not of the caller's input)."""


@dataclass(frozen=True)
class VoiceInfo:
    name: str
    language: str
    engine: str
    description: str
    # What ClauseSynthesized.engine reports, e.g. "piper:joe-us".
    label: str


@dataclass
class EngineAudio:
    """One piece of a text's audio, usually one sentence, complete in itself.

    Mark times are seconds relative to the first sample of *this* `pcm`. Words are the text's words (each word of the
    text appears in exactly one chunk, in order, with start < end inside this chunk's audio); phonemes cover the
    speech, with "" for pauses and gaps between them at word transitions."""

    pcm: np.ndarray  # int16, mono
    sample_rate_hz: int
    phonemes: list[PhonemeSpan] = field(default_factory=list)
    words: list[WordSpan] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.sample_rate_hz


class SpeechEngine(ABC):
    """A speech vendor. Engines are shared by all streams of the process, so `synthesize` must be safe to run
    concurrently (serialise inside the engine where the vendor needs it) and must keep heavy work off the event loop."""

    name: str
    # A network provider (cloud API): its failures mid-utterance are finished by the offline fallback voice.
    remote: bool = False

    @abstractmethod
    def voices(self) -> list[VoiceInfo]:
        """The voices of this engine; the first is its default."""

    @abstractmethod
    def synthesize(self, text: str, voice: str) -> AsyncIterator[EngineAudio]:
        """Yields the text's audio in order, one chunk as soon as each exists (per sentence for local engines).

        The consumer may stop iterating at any chunk boundary (cancellation); no further work is started then.
        Raises EngineError (or any exception) on failure."""

    def resolve_voice(self, name: str) -> VoiceInfo | None:
        """A voice not in `voices()` that this engine can still speak (cloud providers have thousands), else None."""
        return None

    def warm_up(self) -> None:  # noqa: B027 - optional hook, blocking
        """Runs once at start-up, before the service reports SERVING, so the first caller does not pay for it."""
