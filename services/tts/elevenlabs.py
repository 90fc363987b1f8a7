"""ElevenLabs through the official `elevenlabs` SDK: streamed PCM with character timings.

`text_to_speech.stream_with_timestamps` posts to `/v1/text-to-speech/{voice_id}/stream/with-timestamps` and reads
newline-delimited JSON, each line a piece of base64 PCM with the characters spoken in it and their times. Audio is cut
into chunks at word boundaries (so every written word lies inside one chunk, as `EngineAudio` promises), words get
their times from their letters, and each letter becomes a rough IPA mark so the video's viseme mapper can shape the
mouth. Voice names are `elevenlabs:<voice_id>` or `elevenlabs:<voice_id>@<model_id>`."""

from __future__ import annotations

import base64
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np

from services.tts.engine import EngineAudio, EngineError, PhonemeSpan, SpeechEngine, VoiceInfo, WordSpan
from services.tts.estimate import spread_words, voiced_regions
from services.tts.remote import (
    NamedVoices,
    ProviderError,
    RetryPolicy,
    no_audio,
    provider_items,
    status_error,
    transport_error,
)
from services.tts.words import tokenize

log = logging.getLogger(__name__)

PROVIDER = "ElevenLabs"
DEFAULT_VOICE_ID = "JBFqnCBsd6RMkjVDRZzb"  # "George", a premade voice every account has
DEFAULT_MODEL_ID = "eleven_flash_v2_5"  # the lowest-latency model
# 0..4; 3 is the strongest latency optimisation that keeps the text normaliser (4 misreads numbers and dates).
STREAMING_LATENCY = 3
OUTPUT_FORMATS = {16000: "pcm_16000", 24000: "pcm_24000"}
_VOICE_NAME = re.compile(r"^elevenlabs:([A-Za-z0-9_-]{1,64})(?:@([A-Za-z0-9_.-]{1,64}))?$")
_INSTALL_HINT = "the ElevenLabs voice needs the `elevenlabs` SDK: pip install 'infinitetalk-live[elevenlabs]'"

# Letters (and common spellings) to IPA-ish symbols with the mouth shape of the sound they usually spell; checked
# longest first. The viseme mapper reads the first symbol, so "tʃ" is given as "ʃ" (rounded lips, not t's).
_DIGRAPHS = {
    "th": "θ",
    "sh": "ʃ",
    "ch": "ʃ",
    "ph": "f",
    "wh": "w",
    "ng": "ŋ",
    "ck": "k",
    "qu": "w",
    "oo": "u",
    "ee": "i",
    "ea": "i",
    "ou": "aʊ",
    "ow": "oʊ",
    "oa": "oʊ",
    "ai": "e",
    "ay": "e",
    "er": "ɚ",
    "ir": "ɚ",
    "ur": "ɚ",
    "or": "ɔ",
    "ar": "ɑ",  # noqa: RUF001
    "igh": "aɪ",  # noqa: RUF001
}
_LETTERS = {
    "a": "æ",
    "b": "b",
    "c": "k",
    "d": "d",
    "e": "ɛ",
    "f": "f",
    "g": "ɡ",  # noqa: RUF001
    "h": "h",
    "i": "ɪ",  # noqa: RUF001
    "j": "ʒ",
    "k": "k",
    "l": "l",
    "m": "m",
    "n": "n",
    "o": "ɒ",
    "p": "p",
    "q": "k",
    "r": "ɹ",
    "s": "s",
    "t": "t",
    "u": "ʌ",
    "v": "v",
    "w": "w",
    "x": "k",
    "y": "j",
    "z": "z",
}
_SOFT_C = frozenset("eiy")
_MIN_PAUSE_S = 0.04


def letter_marks(letters: Sequence[tuple[str, float, float]]) -> list[PhonemeSpan]:
    """Phoneme-like marks for one word's letters (character, start_s, end_s): one per letter, or one per common
    spelling of one sound ("th", "sh", "oo") spanning its letters. Letters outside a-z pass through as they are."""
    marks: list[PhonemeSpan] = []
    lower = "".join(ch.lower() for ch, _, _ in letters)
    i = 0
    while i < len(letters):
        for size in (3, 2):
            chunk = lower[i : i + size]
            if len(chunk) == size and chunk in _DIGRAPHS:
                marks.append((_DIGRAPHS[chunk], letters[i][1], letters[i + size - 1][2]))
                i += size
                break
        else:
            ch, start, end = letters[i]
            low = ch.lower()
            nxt = lower[i + 1] if i + 1 < len(lower) else ""
            if low == "c" and nxt in _SOFT_C:
                symbol = "s"
            elif low == "y" and i > 0:
                symbol = "i"  # "happy", "my": a vowel after the first letter
            elif low == "e" and i == len(letters) - 1 and i >= 2:
                symbol = "ə"  # final e: mostly silent or reduced
            else:
                symbol = _LETTERS.get(low, ch)
            marks.append((symbol, start, end))
            i += 1
    return marks


class _Timeline:
    """One request's audio and character times, cut into word-aligned EngineAudio chunks as they become complete."""

    def __init__(self, text: str, rate: int) -> None:
        self.text = text
        self.rate = rate
        self.words = [t for t in tokenize(text) if t.is_word]
        self.times: list[tuple[float, float] | None] = [None] * len(text)
        self.cursor = 0  # next character of the text to match against the alignment
        self.audio: list[np.ndarray] = []
        self.total = 0  # samples received
        self.emitted = 0  # samples already handed out
        self.next_word = 0
        self.next_char = 0  # first character whose mark has not been handed out
        self.timed = False

    def add(self, pcm: np.ndarray, alignment: Any) -> None:
        chunk_start_s = self.total / self.rate
        self.audio.append(pcm)
        self.total += len(pcm)
        if alignment is None:
            return
        chars = list(getattr(alignment, "characters", None) or [])
        starts = list(getattr(alignment, "character_start_times_seconds", None) or [])
        ends = list(getattr(alignment, "character_end_times_seconds", None) or [])
        if not chars or len(starts) != len(chars) or len(ends) != len(chars):
            return
        # The HTTP stream gives times from the start of the request's audio; tolerate per-chunk times too (the
        # WebSocket API's convention): those restart near zero while audio has already been received.
        shift = chunk_start_s if chunk_start_s > 0.1 and starts[0] < chunk_start_s * 0.5 else 0.0
        for ch, start, end in zip(chars, starts, ends, strict=True):
            found = self.text.find(ch, self.cursor, self.cursor + 8) if ch else -1
            if found < 0:
                continue  # a character the text does not have (normalisation): skip it
            self.times[found] = (float(start) + shift, max(float(end), float(start)) + shift)
            self.cursor = found + 1
            self.timed = True

    def _word_span(self, k: int) -> tuple[float, float] | None:
        token = self.words[k]
        inner = token.start + max(0, token.raw.find(token.word))  # the letters, without edge punctuation
        spans = [t for t in self.times[inner : inner + len(token.word)] if t is not None]
        spans = spans or [t for t in self.times[token.start : token.end] if t is not None]
        if not spans:
            return None
        complete = self.times[token.end - 1] is not None or self.cursor >= token.end
        return (min(s for s, _ in spans), max(e for _, e in spans)) if complete else None

    def take(self, final: bool) -> EngineAudio | None:
        """The next chunk: audio up to the start of the first word not yet complete (all of it when `final`)."""
        k = self.next_word
        cut_s: float | None = None
        while k < len(self.words) - 1:
            if self._word_span(k) is None:
                break
            following = self._word_span_start(k + 1)
            if following is None or following * self.rate > self.total:
                break
            cut_s = following
            k += 1
        if final:
            k, cut = len(self.words), self.total
        elif cut_s is None:
            return None
        else:
            cut = min(self.total, max(self.emitted, round(cut_s * self.rate)))
        if cut <= self.emitted and not (final and k > self.next_word):
            return None
        pcm = self._slice(self.emitted, cut)
        base = self.emitted / self.rate
        duration = len(pcm) / self.rate
        chosen = self.words[self.next_word : k]
        words: list[WordSpan] = []
        spans = [self._word_span(i) for i in range(self.next_word, k)]
        if chosen and all(s is not None for s in spans):
            for token, span in zip(chosen, spans, strict=True):
                assert span is not None
                start = min(max(span[0] - base, 0.0), duration)
                words.append((token.raw, start, min(max(span[1] - base, start), duration)))
        elif chosen:
            # No usable timings (no alignment came): spread the words over the voiced audio.
            words = spread_words([t.raw for t in chosen], voiced_regions(pcm, self.rate), duration)
        char_end = self.words[k].start if k < len(self.words) else len(self.text)
        phonemes = self._marks(self.next_char, char_end, base, duration)
        self.emitted, self.next_word, self.next_char = cut, k, char_end
        return EngineAudio(pcm=pcm, sample_rate_hz=self.rate, phonemes=phonemes, words=words)

    def _word_span_start(self, k: int) -> float | None:
        token = self.words[k]
        for t in self.times[token.start : token.end]:
            if t is not None:
                return t[0]
        return None

    def _slice(self, lo: int, hi: int) -> np.ndarray:
        pcm = np.concatenate(self.audio) if len(self.audio) != 1 else self.audio[0]
        self.audio = [pcm]
        return pcm[lo:hi].copy()

    def _marks(self, lo: int, hi: int, base: float, duration: float) -> list[PhonemeSpan]:
        marks: list[PhonemeSpan] = []
        letters: list[tuple[str, float, float]] = []

        def flush() -> None:
            marks.extend(letter_marks(letters))
            letters.clear()

        for i in range(lo, hi):
            t = self.times[i]
            ch = self.text[i]
            if t is None:
                continue
            start, end = min(max(t[0] - base, 0.0), duration), min(max(t[1] - base, 0.0), duration)
            if ch.isalnum():
                letters.append((ch, start, end))
                continue
            flush()
            if not ch.isspace() and end - start >= _MIN_PAUSE_S:
                marks.append(("", start, end))  # punctuation held as a pause
        flush()
        marks = [m for m in marks if m[2] > m[1]]
        marks.sort(key=lambda m: m[1])
        if marks and marks[0][1] > 0.02:
            marks.insert(0, ("", 0.0, marks[0][1]))
        return marks


class ElevenLabsEngine(NamedVoices, SpeechEngine):
    """ElevenLabs voices. The SDK's own retries are off: `provider_items` retries 429/5xx before the first audio."""

    name = "elevenlabs"
    voice_name = _VOICE_NAME
    remote = True

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        voice_id: str = DEFAULT_VOICE_ID,
        model_id: str = DEFAULT_MODEL_ID,
        extra_voice_ids: Sequence[str] = (),
        sample_rate_hz: int = 24000,
        policy: RetryPolicy | None = None,
    ) -> None:
        try:
            from elevenlabs.client import AsyncElevenLabs
        except ImportError as error:
            raise ImportError(_INSTALL_HINT) from error
        if sample_rate_hz not in OUTPUT_FORMATS:
            raise ValueError(f"ElevenLabs PCM is offered at {sorted(OUTPUT_FORMATS)} Hz, not {sample_rate_hz}")
        self._key = api_key
        self.policy = policy or RetryPolicy()
        timeout = self.policy.first_byte_timeout_s + self.policy.stall_timeout_s + 60
        kwargs: dict[str, Any] = {"api_key": api_key, "timeout": timeout}
        if base_url:
            kwargs["base_url"] = base_url.rstrip("/")
        self._client = AsyncElevenLabs(**kwargs)
        self.model_id = model_id
        self.sample_rate_hz = sample_rate_hz
        ids = [voice_id, *[v for v in extra_voice_ids if v and v != voice_id]]
        self._voices = [self._info(v, None) for v in ids]

    def _info(self, voice_id: str, model_id: str | None) -> VoiceInfo:
        model = model_id or self.model_id
        name = f"elevenlabs:{voice_id}" + (f"@{model_id}" if model_id else "")
        return VoiceInfo(
            name=name,
            language="multi",
            engine=self.name,
            description=f"ElevenLabs voice {voice_id} ({model}, streamed)",
            label=f"elevenlabs:{voice_id}",
        )

    def _classify(self, error: BaseException) -> ProviderError:
        from elevenlabs.core.api_error import ApiError

        if isinstance(error, ProviderError):
            return error
        if isinstance(error, ApiError) and error.status_code is not None:
            return status_error(
                PROVIDER, error.status_code, _detail(error.body), error.headers, "ELEVENLABS_API_KEY", [self._key]
            )
        return transport_error(PROVIDER, error, [self._key])

    async def synthesize(self, text: str, voice: str) -> AsyncIterator[EngineAudio]:
        match = _VOICE_NAME.match(voice)
        if match is None:
            raise EngineError(f"not an ElevenLabs voice: {voice!r} (use elevenlabs:<voice_id>[@<model_id>])")
        voice_id, model_id = match.group(1), match.group(2) or self.model_id

        def start() -> AsyncIterator[Any]:
            return self._client.text_to_speech.stream_with_timestamps(
                voice_id,
                text=text,
                model_id=model_id,
                output_format=OUTPUT_FORMATS[self.sample_rate_hz],
                optimize_streaming_latency=STREAMING_LATENCY,
                request_options={"max_retries": 0},
            )

        timeline = _Timeline(text, self.sample_rate_hz)
        leftover = b""
        async with contextlib.aclosing(provider_items(start, self._classify, self.policy, PROVIDER)) as items:
            async for item in items:
                raw = leftover + base64.b64decode(item.audio_base_64 or "")
                usable = len(raw) - len(raw) % 2
                leftover = raw[usable:]
                timeline.add(np.frombuffer(raw[:usable], dtype="<i2").astype(np.int16), item.alignment)
                while (chunk := timeline.take(final=False)) is not None:
                    yield chunk
        if timeline.total == 0:
            raise no_audio(PROVIDER)
        if not timeline.timed:
            log.debug("ElevenLabs sent no alignment; word times estimated from the audio")
        final = timeline.take(final=True)
        if final is not None:
            yield final


def _detail(body: Any) -> str:
    """The human part of an ElevenLabs error body: {"detail": {"status": ..., "message": ...}} or a string."""
    if isinstance(body, dict):
        detail = body.get("detail", body)
        if isinstance(detail, dict):
            return str(detail.get("message") or detail.get("status") or detail)
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            return str(detail[0].get("msg") or detail[0])
        return str(detail)
    return "" if body is None else str(body)
