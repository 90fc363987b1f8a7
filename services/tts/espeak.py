"""espeak-ng (formant synthesis): the light fallback voice. Robotic, but tiny, instant (real-time factor ~0.01) and
exact about timing: its own events say where each word and phoneme starts.

Talks to libespeak-ng from the `espeakng-loader` wheel through ctypes. The library is one global state machine, so one
process-wide lock serialises every call; synthesis is synchronous (the callback runs on the calling thread)."""

from __future__ import annotations

import asyncio
import bisect
import ctypes
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np

from services.tts.engine import EngineAudio, EngineError, PhonemeSpan, SpeechEngine, VoiceInfo, WordSpan
from services.tts.words import (
    STRESS_MARKS,
    Token,
    axis_time,
    fill_gaps,
    proportional_ranges,
    split_sentences,
    tokenize,
)

log = logging.getLogger(__name__)

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_PHONEME_IPA = 0x0002
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_EE_OK = 0


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass
class _Capture:
    """What one espeak_Synth call produced: samples, and events as (type, 0-based char position, sample, phoneme)."""

    chunks: list[np.ndarray] = field(default_factory=list)
    events: list[tuple[int, int, int, str]] = field(default_factory=list)
    samples: int = 0


class _Library:
    """The process-wide libespeak-ng, initialised once."""

    _instance: _Library | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        import espeakng_loader

        self.lock = threading.Lock()
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_Callback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        options = _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_PHONEME_IPA | _INITIALIZE_DONT_EXIT
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), options)
        if rate <= 0:
            raise EngineError(f"espeak-ng failed to initialise (code {rate})")
        self.sample_rate_hz = rate
        self._lib = lib
        self._capture: _Capture | None = None
        self._callback = _Callback(self._on_synth)  # kept referenced: espeak holds the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self._voice = ""

    @classmethod
    def get(cls) -> _Library:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _on_synth(self, wav, count: int, events) -> int:
        capture = self._capture
        if capture is None:
            return 1
        if wav and count > 0:
            capture.chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).astype(np.int16, copy=True))
            capture.samples += count
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type in (_EVENT_WORD, _EVENT_PHONEME):
                sample = event.sample
                approx = event.audio_position * self.sample_rate_hz // 1000
                if abs(sample - approx) > self.sample_rate_hz // 100:  # `sample` is "internal use": check it
                    sample = approx
                phoneme = ""
                if event.type == _EVENT_PHONEME:
                    phoneme = bytes(event.id.string).split(b"\0", 1)[0].decode("utf-8", "ignore")
                capture.events.append((event.type, event.text_position - 1, sample, phoneme))
            i += 1
        return 0

    def synth(self, text: str, voice: str) -> _Capture:
        data = text.encode("utf-8")
        with self.lock:
            if voice != self._voice:
                if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                    raise EngineError(f"espeak-ng has no voice {voice!r}")
                self._voice = voice
            self._capture = capture = _Capture()
            try:
                code = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            finally:
                self._capture = None
        if code != _EE_OK:
            raise EngineError(f"espeak-ng synthesis failed (code {code})")
        return capture


def _strip_stress(symbol: str) -> str:
    return "".join(ch for ch in symbol if ch not in STRESS_MARKS)


def capture_to_audio(capture: _Capture, rate: int, tokens: list[Token], offset: int) -> EngineAudio:
    """Turns espeak's events into marks. `tokens` are this sentence's tokens, positions relative to the whole text;
    event positions are relative to the sentence, which starts at `offset`."""
    pcm = np.concatenate(capture.chunks) if capture.chunks else np.zeros(0, dtype=np.int16)
    total = len(pcm)
    # Phoneme k lasts until the next phoneme event (pauses are phoneme events with an empty name) or the end.
    phoneme_events = [(sample, phoneme) for kind, _, sample, phoneme in capture.events if kind == _EVENT_PHONEME]
    phonemes: list[list] = []
    previous = 0
    bounds = [min(max(sample, 0), total) for sample, _ in phoneme_events] + [total]
    for k, (_, symbol) in enumerate(phoneme_events):
        start, end = max(bounds[k], previous), bounds[k + 1]
        previous = max(previous, end)
        if end <= start:
            continue
        name = _strip_stress(symbol)
        if not name and phonemes and phonemes[-1][0] == "" and phonemes[-1][2] == start:
            phonemes[-1][2] = end
        else:
            phonemes.append([name, start, end])
    if phonemes and phonemes[0][1] > 0:
        phonemes.insert(0, ["", 0, phonemes[0][1]])

    # Spoken words: each WORD event, spanning its non-pause phonemes up to the next WORD event.
    spoken: list[tuple[int, int, int]] = []  # (char position in the text, first sample, end sample)
    position = None
    span: list[int] | None = None
    k = 0
    for kind, char, _, symbol in capture.events:
        if kind == _EVENT_WORD:
            if position is not None and span is not None:
                spoken.append((position, span[0], span[1]))
            position, span = offset + char, None
        else:
            if symbol and position is not None and bounds[k + 1] > bounds[k]:
                span = [bounds[k], bounds[k + 1]] if span is None else [span[0], bounds[k + 1]]
            k += 1
    if position is not None and span is not None:
        spoken.append((position, span[0], span[1]))

    words: list[WordSpan] = []
    written = [t for t in tokens if t.is_word]
    if written:
        spans = [(s / rate, e / rate) for _, s, e in spoken]
        ranges: list[tuple[float, float] | None] = [None] * len(written)
        starts = [t.start for t in written]
        for j, (position, _, _) in enumerate(spoken):
            k = bisect.bisect_right(starts, position) - 1
            if k >= 0 and position < written[k].end:
                current = ranges[k]
                ranges[k] = (float(j), float(j + 1)) if current is None else (current[0], float(j + 1))
        placed = fill_gaps(ranges, [len(t.word) for t in written])
        if placed is not None:
            for token, (lo, hi) in zip(written, placed, strict=True):
                start = axis_time(lo, spans, is_end=False)
                words.append((token.raw, start, max(start, axis_time(hi, spans, is_end=True))))
        else:
            speech = [(s, e) for name, s, e in phonemes if name] or [(0, total)]
            region = proportional_ranges([len(t.word) for t in written], speech[0][0] / rate, speech[-1][1] / rate)
            words = [(t.raw, lo, hi) for t, (lo, hi) in zip(written, region, strict=True)]
    marks: list[PhonemeSpan] = [(name, start / rate, end / rate) for name, start, end in phonemes]
    return EngineAudio(pcm=pcm, sample_rate_hz=rate, phonemes=marks, words=words)


_VOICES = {
    "espeak-en-us": ("en-us", "en-US", "US English, espeak-ng formant synthesis (robotic, very light)"),
    "espeak-en-gb": ("en", "en-GB", "British English, espeak-ng formant synthesis (robotic, very light)"),
}


class EspeakEngine(SpeechEngine):
    name = "espeak"

    def __init__(self) -> None:
        self._lib = _Library.get()
        self.sample_rate_hz = self._lib.sample_rate_hz

    def voices(self) -> list[VoiceInfo]:
        return [
            VoiceInfo(name=name, language=lang, engine=self.name, description=desc, label=f"espeak:{lang.lower()}")
            for name, (_, lang, desc) in _VOICES.items()
        ]

    def warm_up(self) -> None:
        for name, (voice, _, _) in _VOICES.items():
            if self._lib.synth("Hello.", voice).samples == 0:
                raise EngineError(f"espeak-ng voice {name} produced no audio")

    async def synthesize(self, text: str, voice: str) -> AsyncIterator[EngineAudio]:
        if voice not in _VOICES:
            raise EngineError(f"espeak has no voice {voice!r}")
        espeak_voice = _VOICES[voice][0]
        tokens = tokenize(text)
        for offset, sentence in split_sentences(text):
            mine = [t for t in tokens if offset <= t.start < offset + len(sentence)]
            yield await asyncio.to_thread(self._speak, sentence, espeak_voice, mine, offset)

    def _speak(self, sentence: str, voice: str, tokens: list[Token], offset: int) -> EngineAudio:
        return capture_to_audio(self._lib.synth(sentence, voice), self.sample_rate_hz, tokens, offset)
