"""Splitting (streamed) text into clauses a voice can speak: the first one as early as it sounds natural, later ones
in sentence-sized pieces. Shared because the llm service splits model output and the session service splits `Say`
text the same way.

Clauses are cut only between words (whitespace-separated tokens), so numbers ("3.5", "1,000"), URLs, e-mail
addresses and "wait...what" always stay whole, and joining the clauses with single spaces gives back the input's words
exactly. Where to cut is decided per word ending:

* sentence end: "?" or "!", or "." unless the word is an abbreviation ("Dr.", "e.g.", "U.S."), an initial ("J."),
  a number prefix before a number ("No. 5"), or the next word starts in lower case ("etc. and"); closing quotes and
  brackets after the mark are allowed; a blank line also ends a sentence;
* pause: "," ";" ":", an ellipsis ("..." or "…"), a dash (em or en dash, "--", a lone "-"), or a single line break.

The first clause goes out at the first sentence end, or at a pause once it has `first_min_words` words. Later clauses
go out at sentence ends, or at a pause once they are `soft_max_chars` long. No clause grows past `hard_max_chars`
(it is cut at its last pause, else before the word that would overflow); a single longer word is its own clause.
"""

from __future__ import annotations

import re

FIRST_MIN_WORDS = 3
SOFT_MAX_CHARS = 120
HARD_MAX_CHARS = 250

_NONE, _PAUSE, _SENTENCE = 0, 1, 2

_TOKEN = re.compile(r"(\S+)(\s*)")
_CLOSERS = "\"')]}\u00bb\u203a\u201d\u2019"  # incl. curly quotes and guillemets
_OPENERS = "\"'([{\u00ab\u2039\u201c\u2018\u00bf\u00a1"
_LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
_DOTTED_ACRONYM = re.compile(r"(?:[^\W\d_]\.){2,}")  # U.S.  e.g.  i.e.  a.m.
_SENTENCE_CAPABLE_ACRONYMS = frozenset({"a.m.", "p.m."})
# Abbreviations that (almost) never end a sentence: titles and Latin/reference shorthand.
_NEVER_FINAL = frozenset(
    {
        "mr", "mrs", "ms", "mx", "dr", "prof", "rev", "fr", "hon", "st", "mt", "sen", "rep", "gov", "gen", "col",
        "maj", "capt", "cmdr", "lt", "sgt", "adm", "pres", "supt", "messrs", "mme", "mlle", "vs", "cf", "approx",
        "appx", "ca", "dept", "incl", "viz", "resp", "esp",
    }
)  # fmt: skip
# Abbreviations that do not end a sentence when a number follows ("No. 5", "Jan. 3", "p. 12").
_BEFORE_NUMBER = frozenset(
    {
        "no", "nos", "nr", "vol", "p", "pp", "ch", "chap", "sec", "fig", "art", "op", "ed", "jan", "feb", "mar", "apr",
        "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    }
)  # fmt: skip
_DASH_ENDINGS = ("\u2014", "\u2013", "--")  # em dash, en dash
_ELLIPSES = ("...", "…")


def _ends_sentence_with_period(core: str, next_first: str | None) -> bool:
    """Whether a word ending in "." ends a sentence, given the first character of the next word (None at the end)."""
    if next_first is not None and next_first.islower():
        return False
    bare = core.lstrip(_OPENERS)
    stem = bare[:-1].lower()
    if not stem:
        return False
    if len(stem) == 1 and stem.isalpha():  # an initial: "J. R. R. Tolkien"
        return False
    if stem in _NEVER_FINAL:
        return False
    if stem in _BEFORE_NUMBER and next_first is not None and next_first.isdigit():
        return False
    return not (_DOTTED_ACRONYM.fullmatch(bare) and bare.lower() not in _SENTENCE_CAPABLE_ACRONYMS)


def _boundary(word: str, gap: str, next_first: str | None) -> int:
    """How strongly the text may be cut after `word`: _NONE, _PAUSE or _SENTENCE."""
    core = word.rstrip(_CLOSERS)
    kind = _NONE
    if core.endswith(_ELLIPSES):
        kind = _PAUSE
    elif core.endswith(("?", "!")):
        kind = _SENTENCE
    elif core.endswith("."):
        kind = _SENTENCE if _ends_sentence_with_period(core, next_first) else _NONE
    elif core.endswith((",", ";", ":", *_DASH_ENDINGS)) or core == "-":
        kind = _PAUSE
    line_breaks = sum(1 for char in gap.replace("\r\n", "\n") if char in _LINE_BREAKS)
    if line_breaks >= 2:
        kind = _SENTENCE
    elif line_breaks == 1:
        kind = max(kind, _PAUSE)
    return kind


class ClauseSplitter:
    """Streaming splitter for one utterance: `feed` text deltas as they arrive, then `flush` once at the end.

    A word is placed only once the whitespace after it and the first character of the next word have arrived (the
    next word's case tells "etc. Then" from "etc. and"), so a delta may end anywhere, even inside "3.5" or "Dr.".
    """

    def __init__(
        self,
        first_min_words: int = FIRST_MIN_WORDS,
        soft_max_chars: int = SOFT_MAX_CHARS,
        hard_max_chars: int = HARD_MAX_CHARS,
    ) -> None:
        if first_min_words < 1 or soft_max_chars < 1 or hard_max_chars < soft_max_chars:
            raise ValueError("need first_min_words >= 1 and 1 <= soft_max_chars <= hard_max_chars")
        self.first_min_words = first_min_words
        self.soft_max_chars = soft_max_chars
        self.hard_max_chars = hard_max_chars
        self._buffer = ""  # text whose words are not placed yet
        self._words: list[str] = []  # the clause being built
        self._chars = 0  # len(" ".join(self._words))
        self._pause_at = 0  # words in the clause up to its last unused pause (0: none)
        self.clauses_emitted = 0

    def feed(self, text_delta: str) -> list[str]:
        """Adds text; returns the clauses that became complete (often none)."""
        if not text_delta:
            return []
        self._buffer += text_delta
        return self._place(final=False)

    def flush(self) -> list[str]:
        """Ends the text; returns the remaining clauses (the last may be short or lack punctuation)."""
        out = self._place(final=True)
        if self._words:
            out.append(self._emit(len(self._words)))
        return out

    def _place(self, final: bool) -> list[str]:
        out: list[str] = []
        tokens = list(_TOKEN.finditer(self._buffer))
        consumed = len(self._buffer) if final else 0
        for index, token in enumerate(tokens):
            if index + 1 < len(tokens):
                following = tokens[index + 1]
                next_word = following.group(1)
                next_first = next_word.lstrip(_OPENERS)[:1]
                if not next_first:
                    if index + 2 == len(tokens) and not final:
                        break  # only an opening quote of the next word so far: its case is still unknown
                    next_first = next_word[0]
                self._add(token.group(1), _boundary(token.group(1), token.group(2), next_first), out)
                consumed = following.start()
            elif final:
                self._add(token.group(1), _NONE, out)
        self._buffer = self._buffer[consumed:]
        return out

    def _add(self, word: str, kind: int, out: list[str]) -> None:
        while self._words and self._chars + 1 + len(word) > self.hard_max_chars:
            out.append(self._emit(self._pause_at or len(self._words)))
        self._chars += len(word) + (1 if self._words else 0)
        self._words.append(word)
        if kind == _SENTENCE:
            out.append(self._emit(len(self._words)))
        elif kind == _PAUSE:
            if self.clauses_emitted == 0:
                ready = len(self._words) >= self.first_min_words
            else:
                ready = self._chars >= self.soft_max_chars
            if ready:
                out.append(self._emit(len(self._words)))
            else:
                self._pause_at = len(self._words)

    def _emit(self, count: int) -> str:
        clause = " ".join(self._words[:count])
        del self._words[:count]
        self._chars = len(" ".join(self._words))
        self._pause_at = 0
        self.clauses_emitted += 1
        return clause


def split_clauses(text: str, **limits: int) -> list[str]:
    """Splits a whole text into clauses, exactly as streaming it through a `ClauseSplitter` would."""
    splitter = ClauseSplitter(**limits)
    return splitter.feed(text) + splitter.flush()
