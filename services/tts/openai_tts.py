"""OpenAI text-to-speech through the official `openai` SDK: `audio.speech` streamed as raw PCM (24 kHz, s16le, mono).

The API gives no timings, so word marks are estimated: audio is handed on in pieces of about 300 ms (cut at the
quietest frame near the end of each), words are assigned to pieces by a speaking rate learned from earlier answers
and spread over each piece's voiced stretches; the last piece takes whatever words remain. No phoneme marks: the video
service then moves the mouth with the audio's energy. Voice names are `openai:<voice>` or `openai:<voice>@<model>`."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np

from services.tts.engine import EngineAudio, EngineError, SpeechEngine, VoiceInfo
from services.tts.estimate import FRAME_S, frame_levels_db, spread_words, voiced_regions
from services.tts.remote import (
    NamedVoices,
    ProviderError,
    RetryPolicy,
    provider_items,
    status_error,
    transport_error,
)
from services.tts.words import tokenize

log = logging.getLogger(__name__)

PROVIDER = "OpenAI"
DEFAULT_MODEL = "gpt-4o-mini-tts"
DEFAULT_VOICE = "alloy"
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse")
RATE_HZ = 24000  # response_format="pcm" is always 24 kHz s16le mono
PIECE_S = 0.3
SEARCH_S = 0.1  # the cut goes to the quietest frame in the last SEARCH_S of a piece
INITIAL_S_PER_CHAR = 0.055  # voiced seconds per written character (letters and a space), learned per engine
_VOICE_NAME = re.compile(r"^openai:([A-Za-z0-9_-]{1,64})(?:@([A-Za-z0-9_.-]{1,64}))?$")
_INSTALL_HINT = "the OpenAI voice needs the `openai` SDK: pip install 'infinitetalk-live[openai]'"


class _Estimator:
    """Turns a PCM byte stream into EngineAudio pieces with estimated word marks."""

    def __init__(self, text: str, s_per_char: float) -> None:
        self.words = [t.raw for t in tokenize(text) if t.is_word]
        weights = [len(w) + 1 for w in self.words]
        # Where each word's middle falls on the voiced-time axis, by the expected rate.
        self.centers = (np.cumsum(weights) - np.array(weights) / 2) * s_per_char
        self.chars = sum(weights)
        self.pending = np.zeros(0, dtype=np.int16)
        self.leftover = b""
        self.next_word = 0
        self.voiced_s = 0.0
        self.peak_db: float | None = None

    def add(self, data: bytes) -> list[EngineAudio]:
        data = self.leftover + data
        usable = len(data) - len(data) % 2
        self.leftover = data[usable:]
        self.pending = np.concatenate([self.pending, np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)])
        pieces = []
        while len(self.pending) >= int((PIECE_S + SEARCH_S) * RATE_HZ):
            pieces.append(self._emit(self._cut_point(), final=False))
        return pieces

    def finish(self) -> EngineAudio | None:
        if not len(self.pending) and self.next_word >= len(self.words):
            return None
        return self._emit(len(self.pending), final=True)

    def _cut_point(self) -> int:
        lo, hi = int(PIECE_S * RATE_HZ), int((PIECE_S + SEARCH_S) * RATE_HZ)
        frame = int(FRAME_S * RATE_HZ)
        levels = frame_levels_db(self.pending[lo:hi], RATE_HZ)
        return lo + int(np.argmin(levels)) * frame if len(levels) else lo

    def _emit(self, cut: int, final: bool) -> EngineAudio:
        pcm, self.pending = self.pending[:cut].copy(), self.pending[cut:]
        levels = frame_levels_db(pcm, RATE_HZ)
        if len(levels):
            loudest = float(levels.max())
            self.peak_db = loudest if self.peak_db is None else max(self.peak_db, loudest)
        regions = voiced_regions(pcm, RATE_HZ, self.peak_db) if len(pcm) else []
        self.voiced_s += sum(e - s for s, e in regions)
        if final:
            end = len(self.words)
        else:
            end = self.next_word
            while end < len(self.words) and self.centers[end] < self.voiced_s and regions:
                end += 1
        chosen = self.words[self.next_word : end]
        self.next_word = end
        duration = len(pcm) / RATE_HZ
        return EngineAudio(pcm=pcm, sample_rate_hz=RATE_HZ, words=spread_words(chosen, regions, duration))


class OpenAITtsEngine(NamedVoices, SpeechEngine):
    """OpenAI voices. The SDK's own retries are off: `provider_items` retries 429/5xx before the first audio."""

    name = "openai"
    remote = True
    voice_name = _VOICE_NAME

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        model: str = DEFAULT_MODEL,
        default_voice: str = DEFAULT_VOICE,
        voices: Sequence[str] = VOICES,
        policy: RetryPolicy | None = None,
    ) -> None:
        try:
            import httpx
            from openai import AsyncOpenAI
        except ImportError as error:
            raise ImportError(_INSTALL_HINT) from error
        self._key = api_key
        self.policy = policy or RetryPolicy()
        timeout = httpx.Timeout(self.policy.stall_timeout_s + 30, connect=self.policy.first_byte_timeout_s)
        self._client = AsyncOpenAI(api_key=api_key, base_url=base_url or None, max_retries=0, timeout=timeout)
        self.model = model
        names = [default_voice, *[v for v in voices if v != default_voice]]
        self._voices = [self._info(v, None) for v in names]
        self._s_per_char = INITIAL_S_PER_CHAR

    def _info(self, voice: str, model: str | None) -> VoiceInfo:
        return VoiceInfo(
            name=f"openai:{voice}" + (f"@{model}" if model else ""),
            language="multi",
            engine=self.name,
            description=f"OpenAI voice {voice} ({model or self.model}, streamed; word times estimated)",
            label=f"openai:{voice}",
        )

    def _classify(self, error: BaseException) -> ProviderError:
        import openai

        if isinstance(error, ProviderError):
            return error
        if isinstance(error, openai.APIStatusError):
            return status_error(
                PROVIDER, error.status_code, _detail(error.body), error.response.headers, "OPENAI_API_KEY", [self._key]
            )
        if isinstance(error, openai.APITimeoutError):
            return transport_error(PROVIDER, TimeoutError("Timeout"), [self._key])
        return transport_error(PROVIDER, error.__cause__ or error, [self._key])

    async def _bytes(self, text: str, voice: str, model: str) -> AsyncIterator[bytes]:
        async with self._client.audio.speech.with_streaming_response.create(
            model=model, voice=voice, input=text, response_format="pcm"
        ) as response:
            async for data in response.iter_bytes():
                if data:
                    yield data

    async def synthesize(self, text: str, voice: str) -> AsyncIterator[EngineAudio]:
        match = _VOICE_NAME.match(voice)
        if match is None:
            raise EngineError(f"not an OpenAI voice: {voice!r} (use openai:<voice>[@<model>])")
        name, model = match.group(1), match.group(2) or self.model
        estimator = _Estimator(text, self._s_per_char)
        answer = provider_items(lambda: self._bytes(text, name, model), self._classify, self.policy, PROVIDER)
        async with contextlib.aclosing(answer) as pieces:
            async for data in pieces:
                for piece in estimator.add(data):
                    yield piece
        last = estimator.finish()
        if last is not None:
            yield last
        if estimator.chars >= 20 and estimator.voiced_s > 0:
            # Learn this voice's pace, so the next answer's words land in the right pieces.
            self._s_per_char = 0.7 * self._s_per_char + 0.3 * (estimator.voiced_s / estimator.chars)


def _detail(body: Any) -> str:
    """The message of an OpenAI error body {"error": {"message": ...}}, or the body itself."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        return str(inner.get("message") or inner) if isinstance(inner, dict) else str(inner)
    return "" if body is None else str(body)
