"""Giving every written word of a text a time span in its audio.

Engines report timing for what they *spoke*, which is not what was *written*: "3.5" is spoken as three words, espeak
joins unstressed function words ("in the" is spoken as one word), and emoji are read out. The functions here
map written words onto spoken words on an axis counted in spoken words (x in [j, j+1) lies inside spoken word j),
then turn axis positions into seconds with the spoken words' time spans."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

STRESS_MARKS = frozenset("ˈˌ")
SILENCE_SYMBOLS = frozenset({"^", "$", "_"})

AxisRange = tuple[float, float]


@dataclass(frozen=True)
class Token:
    """A whitespace-separated piece of the text; `is_word` if it has a letter or digit (those get WordMarks)."""

    word: str  # with punctuation at its edges removed
    raw: str
    start: int  # character offset of `raw` in the text
    end: int
    is_word: bool


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


def tokenize(text: str) -> list[Token]:
    tokens = []
    for match in re.finditer(r"\S+", text):
        raw = match.group()
        lo, hi = 0, len(raw)
        while lo < hi and _is_punct(raw[lo]):
            lo += 1
        while hi > lo and _is_punct(raw[hi - 1]):
            hi -= 1
        word = raw[lo:hi] or raw
        tokens.append(Token(word, raw, match.start(), match.end(), any(ch.isalnum() for ch in raw)))
    return tokens


_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*\s+|\n\s*")


def split_sentences(text: str) -> list[tuple[int, str]]:
    """(offset, sentence) pieces, so long text streams out sentence by sentence."""
    pieces = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        pieces.append((start, text[start : match.end()]))
        start = match.end()
    pieces.append((start, text[start:]))
    return [(offset, piece) for offset, piece in pieces if piece.strip()]


_CLAUSE_END = re.compile(r"[,;:\u2014]+[\"'\u201d\u2019)\]]*\s+")


def split_long_text(text: str, max_chars: int) -> list[str]:
    """Pieces of at most about `max_chars`, cut at sentence ends, else clause punctuation, else spaces; text that
    fits is returned whole. Bounds the work (and the wait for first audio) of one synthesis call."""
    if len(text) <= max_chars:
        return [text]
    pieces: list[str] = []
    for _, sentence in split_sentences(text):
        parts = [sentence]
        if len(sentence) > max_chars:
            parts, start = [], 0
            for match in _CLAUSE_END.finditer(sentence):
                parts.append(sentence[start : match.end()])
                start = match.end()
            parts.append(sentence[start:])
        for part in parts:
            while len(part) > max_chars:
                cut = part.rfind(" ", 1, max_chars)
                if cut <= 0:
                    cut = part.find(" ", max_chars)  # never cut inside a word
                if cut <= 0:
                    break
                pieces.append(part[:cut])
                part = part[cut:]
            if pieces and len(pieces[-1]) + len(part) <= max_chars:
                pieces[-1] += part
            else:
                pieces.append(part)
    return [piece for piece in pieces if piece.strip()]


def is_separator(phoneme: str) -> bool:
    """Space, sentence edges and punctuation separate spoken words (Piper's phoneme alphabet)."""
    return not phoneme.strip() or phoneme in SILENCE_SYMBOLS or all(_is_punct(ch) for ch in phoneme)


def spoken_word_ranges(phonemes: Sequence[str]) -> list[tuple[int, int]]:
    """Index ranges [i, j) of the maximal runs of non-separator phonemes: the words as spoken."""
    ranges = []
    start = None
    for i, phoneme in enumerate(phonemes):
        if is_separator(phoneme):
            if start is not None:
                ranges.append((start, i))
                start = None
        elif start is None:
            start = i
    if start is not None:
        ranges.append((start, len(phonemes)))
    return ranges


def spoken_words(phonemes: Sequence[str]) -> list[str]:
    return ["".join(phonemes[i:j]) for i, j in spoken_word_ranges(phonemes)]


def _size(word: str) -> int:
    return max(1, sum(1 for ch in word if ch not in STRESS_MARKS))


_MAX_GROUP = 4
_GROUP_PENALTY = 0.35
_SKIP_PENALTY = 1.0


def align_sequences(expected: Sequence[str], actual: Sequence[str]) -> list[AxisRange]:
    """Monotone alignment of words phonemised one at a time (`expected`) onto the words actually spoken (`actual`).

    Up to four expected words may merge into one spoken word (their shares split by length) and one expected word may
    expand into up to four spoken words; either side may also skip a word. Costs compare phoneme counts, which is
    enough because the order is fixed. Returns each expected word's range on the spoken-word axis; a skipped word gets
    an empty range at its position."""
    n, m = len(expected), len(actual)
    if n == 0:
        return []
    if m == 0:
        return [(0.0, 0.0)] * n
    le = [_size(w) for w in expected]
    la = [_size(w) for w in actual]
    slack = abs(n - m) + 8

    def in_band(i: int, j: int) -> bool:
        return abs(j - i * m / n) <= slack

    inf = math.inf
    cost: dict[tuple[int, int], float] = {(0, 0): 0.0}
    back: dict[tuple[int, int], tuple[int, int]] = {}
    for i in range(n + 1):
        center = i * m / n
        for j in range(max(0, math.floor(center - slack)), min(m, math.ceil(center + slack)) + 1):
            here = cost.get((i, j), inf)
            if here == inf:
                continue
            moves: list[tuple[int, int, float]] = []
            if i < n:
                moves.append((1, 0, _SKIP_PENALTY + 0.1 * le[i]))
            if j < m:
                moves.append((0, 1, _SKIP_PENALTY + 0.1 * la[j]))
            if i < n and j < m:
                total = 0
                for k in range(1, min(_MAX_GROUP, n - i) + 1):
                    total += le[i + k - 1]
                    moves.append((k, 1, abs(total - la[j]) / max(total, la[j]) + _GROUP_PENALTY * (k - 1)))
                total = la[j]
                for k in range(2, min(_MAX_GROUP, m - j) + 1):
                    total += la[j + k - 1]
                    moves.append((1, k, abs(le[i] - total) / max(le[i], total) + _GROUP_PENALTY * (k - 1)))
            for di, dj, step in moves:
                target = (i + di, j + dj)
                if not in_band(*target) and target != (n, m):
                    continue
                if here + step < cost.get(target, inf):
                    cost[target] = here + step
                    back[target] = (i, j)

    ranges: list[AxisRange] = [(0.0, 0.0)] * n
    state = (n, m)
    while state != (0, 0):
        prev = back[state]
        (i0, j0), (i1, j1) = prev, state
        if i1 - i0 >= 1 and j1 - j0 == 1:
            total = sum(le[i0:i1])
            x = float(j0)
            for i in range(i0, i1):
                width = le[i] / total
                ranges[i] = (x, x + width)
                x += width
            ranges[i1 - 1] = (ranges[i1 - 1][0], float(j1))
        elif i1 - i0 == 1 and j1 - j0 >= 1:
            ranges[i0] = (float(j0), float(j1))
        elif i1 - i0 == 1:
            ranges[i0] = (float(j0), float(j0))
        state = prev
    return ranges


def token_ranges(isolated: Sequence[Sequence[str]], actual: Sequence[str]) -> list[AxisRange | None]:
    """Each token's range on the spoken axis, given the spoken words each token yields when phonemised alone;
    None for a token that has no audio of its own."""
    expected: list[str] = []
    owner: list[int] = []
    for index, words in enumerate(isolated):
        expected.extend(words)
        owner.extend([index] * len(words))
    result: list[AxisRange | None] = [None] * len(isolated)
    for index, (lo, hi) in zip(owner, align_sequences(expected, actual), strict=True):
        if hi <= lo:
            continue
        current = result[index]
        result[index] = (lo, hi) if current is None else (min(current[0], lo), max(current[1], hi))
    return result


def fill_gaps(ranges: Sequence[AxisRange | None], weights: Sequence[float]) -> list[AxisRange] | None:
    """Gives words without audio of their own a share of a neighbour's range (by weight, e.g. length), so every word
    gets a non-empty range, in order; None if no word has any range."""
    present = [i for i, r in enumerate(ranges) if r is not None]
    if not present:
        return None
    result: list[AxisRange | None] = list(ranges)
    i = 0
    while i < len(ranges):
        if ranges[i] is not None:
            i += 1
            continue
        j = i
        while j < len(ranges) and ranges[j] is None:
            j += 1
        # Words i..j-1 have no range: share the previous word's range, or the next one's at the start.
        group = list(range(i - 1, j)) if i > 0 else list(range(i, j + 1))
        anchor = ranges[i - 1] if i > 0 else ranges[j]
        assert anchor is not None
        total = sum(weights[k] for k in group)
        x = anchor[0]
        for k in group:
            width = (anchor[1] - anchor[0]) * weights[k] / total
            result[k] = (x, x + width)
            x += width
        result[group[-1]] = (result[group[-1]][0], anchor[1])  # type: ignore[index]
        i = j
    return result  # type: ignore[return-value]


def proportional_ranges(weights: Sequence[float], start: float, end: float) -> list[AxisRange]:
    """Splits [start, end) among items in order, proportionally to their weights."""
    total = sum(weights) or 1.0
    ranges = []
    x = start
    for weight in weights:
        width = (end - start) * weight / total
        ranges.append((x, x + width))
        x += width
    return ranges


def axis_time(x: float, spans: Sequence[tuple[float, float]], *, is_end: bool) -> float:
    """Seconds at axis position x, interpolating inside the spoken word it falls in. An end position that is a whole
    number j means the end of word j-1 (not the start of word j), so pauses between words stay outside both."""
    if not spans:
        raise ValueError("no spoken words")
    index = math.ceil(x) - 1 if is_end else math.floor(x)
    index = min(max(index, 0), len(spans) - 1)
    fraction = min(max(x - index, 0.0), 1.0)
    start, end = spans[index]
    return start + fraction * (end - start)
