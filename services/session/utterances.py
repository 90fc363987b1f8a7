"""One utterance's progress (clauses, audio, words, timings) and how its synthesised audio's marks become timeline
marks: each clause's phoneme and word times are relative to the clause's own audio, so they are shifted to the
utterance's sample count and its word indices continued across clauses."""

from __future__ import annotations

from dataclasses import dataclass, field

from infinitetalk_live_client.avatar.v1 import session_pb2, tts_pb2
from services.session.timeline import Mark


@dataclass
class Utterance:
    utterance_id: str
    source: int
    requested_at: float
    clause_count: int | None = None
    clauses_synthesized: int = 0
    next_word_index: int = 0
    clause_word_base: dict[int, int] = field(default_factory=dict)
    clause_sample_base: dict[int, int] = field(default_factory=dict)
    received_samples: int = 0
    spoken_words: list[str] = field(default_factory=list)
    first_clause_at: float | None = None
    first_audio_at: float | None = None
    first_frame_at: float | None = None
    first_frame_index: int | None = None
    started: bool = False
    failed: bool = False
    finish_reason: int = session_pb2.FINISH_REASON_UNSPECIFIED
    finished: bool = False
    latency_reported: bool = False

    @property
    def text_done(self) -> bool:
        """All of its text is known (Say: at once; Chat: when the LLM said how many clauses it made)."""
        return self.source == session_pb2.UTTERANCE_SOURCE_SAY or self.clause_count is not None

    @property
    def synthesized(self) -> bool:
        return self.clause_count is not None and self.clauses_synthesized >= self.clause_count

    def take_audio(self, audio: tts_pb2.SynthesizedAudio, default_rate: int) -> list[Mark]:
        """Books a piece of synthesised audio; returns its marks in samples of the utterance's audio."""
        clause = audio.clause_index
        if clause not in self.clause_sample_base:
            self.clause_sample_base[clause] = self.received_samples - audio.offset_samples
            self.clause_word_base[clause] = self.next_word_index
        base = self.clause_sample_base[clause]
        rate = audio.sample_rate_hz or default_rate
        marks = [
            Mark(p.phoneme, base + p.start_us * rate // 1_000_000, base + p.end_us * rate // 1_000_000)
            for p in audio.phonemes
        ]
        for word in audio.words:
            index = self.clause_word_base[clause] + word.word_index
            self.next_word_index = max(self.next_word_index, index + 1)
            marks.append(
                Mark(word.word, base + word.start_us * rate // 1_000_000, base + word.end_us * rate // 1_000_000, index)
            )
        self.received_samples += len(audio.pcm_s16le) // 2
        return marks
