"""From phonemes (IPA as Piper/espeak emit them) and audio to a mouth shape per video frame.

A viseme is the mouth shape of a class of phonemes: lips closed for p/b/m, lower lip to teeth for f/v, wide for
i/e, open for a, rounded for o/u/w. `MouthTracker` turns the phoneme marks that arrive with each frame into a target
shape (overlap-weighted over the frame's time span), falls back to the audio's energy when speech arrives without
marks, and smooths the result with an attack/release filter so consecutive visemes blend (co-articulation) and the
mouth settles back to rest shortly after speech ends.
"""

from __future__ import annotations

import functools
import math
import unicodedata
from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class MouthShape:
    """Mouth parameters, each 0..1: `open` jaw/lip opening, `width` lip spread (0.5 neutral, 1 wide smile),
    `round` lip rounding and protrusion."""

    open: float = 0.0
    width: float = 0.5
    round: float = 0.0

    def blend(self, other: MouthShape, weight: float) -> MouthShape:
        """This shape moved `weight` (0..1) of the way to `other`."""
        return MouthShape(
            self.open + (other.open - self.open) * weight,
            self.width + (other.width - self.width) * weight,
            self.round + (other.round - self.round) * weight,
        )


REST = MouthShape(0.0, 0.5, 0.0)

# Viseme classes and their mouth shapes.
VISEMES: dict[str, MouthShape] = {
    "rest": REST,
    "gap": MouthShape(0.06, 0.5, 0.0),  # a word boundary inside speech: lips relax but do not close
    "closed": MouthShape(0.0, 0.45, 0.05),  # p b m
    "fv": MouthShape(0.12, 0.55, 0.0),  # lower lip to upper teeth
    "th": MouthShape(0.22, 0.55, 0.0),  # tongue between teeth
    "dental": MouthShape(0.2, 0.6, 0.0),  # t d n
    "l": MouthShape(0.3, 0.55, 0.0),
    "sibilant": MouthShape(0.1, 0.7, 0.0),  # s z: teeth together
    "postalveolar": MouthShape(0.2, 0.3, 0.65),  # sh zh ch j: lips pushed out
    "r": MouthShape(0.22, 0.35, 0.5),
    "velar": MouthShape(0.3, 0.5, 0.0),  # k g ng h
    "j": MouthShape(0.2, 0.75, 0.0),
    "w": MouthShape(0.12, 0.1, 1.0),
    "i": MouthShape(0.25, 0.9, 0.0),  # fleece
    "ih": MouthShape(0.32, 0.8, 0.0),  # kit
    "e": MouthShape(0.45, 0.75, 0.0),  # dress, face
    "ae": MouthShape(0.7, 0.75, 0.0),  # trap
    "a": MouthShape(0.9, 0.55, 0.0),  # palm, price
    "uh": MouthShape(0.6, 0.5, 0.0),  # strut, comma-a
    "schwa": MouthShape(0.4, 0.5, 0.1),
    "er": MouthShape(0.35, 0.4, 0.35),  # nurse, letter
    "o": MouthShape(0.55, 0.25, 0.8),  # goat
    "aw": MouthShape(0.7, 0.3, 0.6),  # thought, lot
    "oo": MouthShape(0.3, 0.2, 0.8),  # foot
    "u": MouthShape(0.25, 0.1, 1.0),  # goose
}

_CLASS_OF: dict[str, str] = {}


def _classes(viseme: str, symbols: str) -> None:
    for symbol in symbols:
        _CLASS_OF[symbol] = viseme


_classes("closed", "pbmɓʙ")
_classes("fv", "fvɱʋⱱɸβ")  # noqa: RUF001
_classes("th", "θð")
_classes("dental", "tdnɾɖʈɗɳɽ")
_classes("l", "lɫɬɮɭʎɺʟ")
_classes("sibilant", "szɕʑʂʐ")
_classes("postalveolar", "ʃʒ")
_classes("r", "ɹrɻʀʁɰ")
_classes("velar", "kgɡŋxɣχħhɦʔçʝɟɢɴʕʜʢʡɠʛɧ")  # noqa: RUF001
_classes("j", "jɲ")
_classes("w", "wʍɥ")
_classes("i", "iy")
_classes("ih", "ɪɨʏᵻ")
_classes("e", "eɛεɘ")
_classes("ae", "æ")
_classes("a", "aɑɶ")  # noqa: RUF001
_classes("uh", "ɐʌ")
_classes("schwa", "əɵɤɯ")
_classes("er", "ɚɜɞ˞")
_classes("o", "oøœ")
_classes("aw", "ɔɒ")
_classes("oo", "ʊ")
_classes("u", "uʉ")
_classes("gap", " ")
_classes("rest", "_^$.,!?;:-–—…\"'()«»¡¿0123456789#")  # noqa: RUF001

# Symbols that modify a neighbour rather than having a shape of their own: stress, length, tie bars, diacritics.
MODIFIERS = frozenset("ˈˌːˑ˘ʰʲʷˠˤ̧̩̯̪̃͜͡‿↓↑|ǀǁǂǃʘ")

# Latin letters a non-IPA provider may emit as its "phonemes".
_LETTERS: dict[str, str] = {
    "a": "a",
    "e": "e",
    "i": "ih",
    "o": "o",
    "u": "oo",
    "y": "i",
    "b": "closed",
    "p": "closed",
    "m": "closed",
    "f": "fv",
    "v": "fv",
    "w": "w",
    "q": "w",
    "c": "velar",
    "g": "velar",
    "k": "velar",
    "h": "velar",
    "x": "velar",
    "j": "postalveolar",
    "r": "r",
    "l": "l",
    "s": "sibilant",
    "z": "sibilant",
    "t": "dental",
    "d": "dental",
    "n": "dental",
}


def viseme_of(phoneme: str) -> str | None:
    """The viseme class of a phoneme, "rest" for silence and punctuation, None for a pure modifier (stress or
    length mark) that takes its neighbour's shape. Multi-symbol phonemes ("oʊ", "tʃ") take their first symbol."""
    if phoneme == "":
        return "rest"
    if phoneme in _CLASS_OF:
        return _CLASS_OF[phoneme]
    for symbol in phoneme:
        if symbol in MODIFIERS or unicodedata.combining(symbol):
            continue
        if symbol in _CLASS_OF:
            return _CLASS_OF[symbol]
        lower = unicodedata.normalize("NFKD", symbol.lower())[:1]
        if lower in _LETTERS:
            return _LETTERS[lower]
        if lower in _CLASS_OF:
            return _CLASS_OF[lower]
        return "schwa" if symbol.isalpha() else "rest"
    return None


def shape_of(phoneme: str) -> MouthShape | None:
    """The target mouth shape of a phoneme (None for a modifier)."""
    viseme = viseme_of(phoneme)
    return None if viseme is None else VISEMES[viseme]


@dataclass(frozen=True)
class _ActiveMark:
    start_us: int
    end_us: int
    shape: MouthShape
    closure: bool


@dataclass(frozen=True)
class TrackerState:
    """Everything `MouthTracker` remembers between frames (immutable, so snapshots are free)."""

    shape: MouthShape = REST
    marks: tuple[_ActiveMark, ...] = ()
    last_shape: MouthShape | None = None  # the last real phoneme's shape, for modifiers that follow it
    peak_db: float = -30.0  # running speech level for the energy fallback (auto gain)
    energy: float = 0.0  # smoothed speech energy 0..1 (drives head nods)
    syllable: int = 0  # counts energy-fallback syllables, to vary their shapes


MAX_MARK_US = 2_000_000  # a mark longer than this is clamped (a bad end time must not freeze the mouth)
SPEECH_FLOOR_DB = -50.0  # frames quieter than this (dBFS) are silence
ENERGY_FLOOR = 0.1  # on silent drives, less speech energy than this is none (a nod of a tenth of its size)


class MouthTracker:
    """Per-renderer mouth animation: phoneme marks + PCM per frame in, smoothed `MouthShape` out.

    Time constants are in seconds, so behaviour does not depend on the frame rate: opening is fast (attack), closing
    slower (release) except for lip closures (p/b/m), which snap shut as they do in speech.

    A silent drive (no audio, no marks: an idle frame) says nothing is being said: marks that outlast their audio
    stop holding the mouth, and the speech energy fades fast and snaps to zero. So after `settle_frames` silent
    drives the visible state is exactly at rest (shape REST, energy 0), whatever came before.
    """

    attack_s = 0.035
    release_s = 0.04
    closure_s = 0.02
    shape_s = 0.05
    quiet_s = 0.08  # how fast the speech energy fades on silent drives

    def __init__(self, fps: int) -> None:
        self.fps = fps
        self.state = TrackerState()
        dt = 1.0 / fps
        self._attack = 1.0 - math.exp(-dt / self.attack_s)
        self._release = 1.0 - math.exp(-dt / self.release_s)
        self._closure = 1.0 - math.exp(-dt / self.closure_s)
        self._shape = 1.0 - math.exp(-dt / self.shape_s)
        self._quiet = math.exp(-dt / self.quiet_s)

    @property
    def settle_frames(self) -> int:
        """Silent drives after which the shape is exactly REST and the energy exactly 0, from any state."""
        return _settle_frames(self.fps)

    def step(self, frame_index: int, pcm: np.ndarray | None, marks: tuple) -> MouthShape:
        """Advances one frame; `marks` are objects with `phoneme`, `start_us`, `end_us` starting in this frame."""
        state = self.state
        t0 = frame_index * 1_000_000 // self.fps
        t1 = (frame_index + 1) * 1_000_000 // self.fps
        silent = (pcm is None or len(pcm) == 0) and not marks
        # An idle drive: marks that outlast their audio do not hold the mouth open.
        active = [] if silent else [mark for mark in state.marks if mark.end_us > t0]
        last_shape = state.last_shape
        for mark in sorted(marks, key=lambda m: m.start_us):
            start = int(mark.start_us)
            end = min(max(int(mark.end_us), start), start + MAX_MARK_US)
            shape = shape_of(mark.phoneme)
            if shape is None:  # stress/length: holds the previous phoneme's shape
                if last_shape is None:
                    continue
                shape = last_shape
            else:
                last_shape = shape
            closure = shape.open == 0.0 and shape is not REST
            if end > start:
                active.append(_ActiveMark(start, end, shape, closure))

        level_db, zcr = _audio_features(pcm)
        speaking = level_db > SPEECH_FLOOR_DB
        peak_db = state.peak_db
        if speaking:
            peak_db = max(level_db, peak_db - 12.0 / self.fps)  # decays 12 dB/s towards quieter speech
        energy_now = min(1.0, max(0.0, (level_db - (peak_db - 30.0)) / 30.0)) if speaking else 0.0

        target, covered, closure = _marks_target(active, t0, t1)
        syllable = state.syllable
        if covered == 0.0:
            if speaking:
                target, syllable = _energy_target(energy_now, zcr, state, syllable)
            else:
                target = REST
        elif covered < 1.0 and not speaking:
            target = REST.blend(target, covered)

        shape = state.shape
        closing = self._closure if closure else self._release
        rate = self._attack if target.open >= shape.open else closing
        new_open = shape.open + (target.open - shape.open) * rate
        new_width = shape.width + (target.width - shape.width) * self._shape
        new_round = shape.round + (target.round - shape.round) * self._shape
        new_shape = MouthShape(
            _settle(new_open, target.open), _settle(new_width, target.width), _settle(new_round, target.round)
        )
        if silent:
            energy = state.energy * self._quiet
            energy = 0.0 if energy < ENERGY_FLOOR else energy
        else:
            energy = state.energy + (energy_now - state.energy) * (self._attack if energy_now > state.energy else 0.15)
        active = [mark for mark in active if mark.end_us > t1]
        self.state = replace(
            state,
            shape=new_shape,
            marks=tuple(active),
            last_shape=last_shape,
            peak_db=peak_db,
            energy=energy,
            syllable=syllable,
        )
        return new_shape


def _settle(value: float, target: float) -> float:
    return target if abs(value - target) < 0.015 else value


@functools.lru_cache(maxsize=16)
def _settle_frames(fps: int) -> int:
    """Steps the tracker on silent drives from the farthest states from rest (each parameter at an end of its range,
    full energy, a mark still running) until it is exactly at rest: the release is a contraction towards REST with
    a snap at the end, so no state in range takes longer."""
    worst = 0
    for width in (0.0, 1.0):
        tracker = MouthTracker(fps)
        mark = _ActiveMark(0, MAX_MARK_US, MouthShape(1.0, width, 1.0), False)
        tracker.state = TrackerState(shape=MouthShape(1.0, width, 1.0), marks=(mark,), energy=1.0)
        for frames in range(1, 60 * fps):
            tracker.step(frames, None, ())
            if tracker.state.shape == REST and tracker.state.energy == 0.0:
                worst = max(worst, frames)
                break
        else:
            raise AssertionError("the mouth tracker does not settle on silence")
    return worst


def _marks_target(active: list[_ActiveMark], t0: int, t1: int) -> tuple[MouthShape, float, bool]:
    """Overlap-weighted shape of the marks over [t0, t1); lip closures weigh triple so a short p/b/m still shows.
    Returns (shape, fraction of the frame covered, whether a closure dominates)."""
    span = max(1, t1 - t0)
    total = weight_sum = 0.0
    open_ = width = round_ = 0.0
    closure_weight = 0.0
    for mark in active:
        overlap = min(mark.end_us, t1) - max(mark.start_us, t0)
        if overlap <= 0:
            continue
        total += overlap
        weight = overlap * (3.0 if mark.closure else 1.0)
        weight_sum += weight
        open_ += mark.shape.open * weight
        width += mark.shape.width * weight
        round_ += mark.shape.round * weight
        if mark.closure:
            closure_weight += weight
    if weight_sum == 0.0:
        return REST, 0.0, False
    shape = MouthShape(open_ / weight_sum, width / weight_sum, round_ / weight_sum)
    return shape, min(1.0, total / span), closure_weight * 2 >= weight_sum


def _audio_features(pcm: np.ndarray | None) -> tuple[float, float]:
    """(level in dBFS, zero-crossing rate per sample) of a frame's int16 PCM."""
    if pcm is None or len(pcm) == 0:
        return -120.0, 0.0
    samples = pcm.astype(np.float32) * (1.0 / 32768.0)
    level = float(np.sqrt(np.mean(samples * samples)))
    signs = np.signbit(samples)
    zcr = float(np.count_nonzero(signs[1:] != signs[:-1])) / max(1, len(samples) - 1)
    return 20.0 * math.log10(level + 1e-9), zcr


# Shapes the energy fallback cycles through syllable by syllable, so unmarked speech does not look mechanical.
_FALLBACK_VOWELS = (VISEMES["a"], VISEMES["e"], VISEMES["o"], VISEMES["uh"], VISEMES["ih"], VISEMES["aw"])


def _energy_target(energy: float, zcr: float, state: TrackerState, syllable: int) -> tuple[MouthShape, int]:
    """Mouth target from loudness alone: louder opens wider; noisy (fricative-like) audio keeps the teeth close."""
    if state.energy < 0.25 <= energy:
        syllable += 1  # a new energy rise: a new syllable
    vowel = _FALLBACK_VOWELS[syllable % len(_FALLBACK_VOWELS)]
    open_ = 0.15 + 0.75 * energy
    if zcr > 0.25:  # mostly high-frequency energy: a fricative
        return MouthShape(0.12, 0.65, 0.0), syllable
    return MouthShape(open_ * (0.6 + 0.4 * vowel.open), vowel.width, vowel.round), syllable
