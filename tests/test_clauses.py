"""The shared clause splitter: where it cuts, where it never cuts, and that no word is ever lost or changed."""

from __future__ import annotations

import random

import pytest

from services.common.clauses import HARD_MAX_CHARS, SOFT_MAX_CHARS, ClauseSplitter, split_clauses


def normalised(text: str) -> str:
    return " ".join(text.split())


def stream(text: str, sizes: list[int] | None = None, seed: int = 0, **limits: int) -> list[str]:
    """Feeds `text` in chunks (random sizes 1..8 unless given), collecting clauses as they come."""
    rng = random.Random(seed)
    splitter = ClauseSplitter(**limits)
    out: list[str] = []
    pos = 0
    index = 0
    while pos < len(text):
        size = sizes[index % len(sizes)] if sizes else rng.randint(1, 8)
        out += splitter.feed(text[pos : pos + size])
        pos += size
        index += 1
    return out + splitter.flush()


# -- where clauses end ---------------------------------------------------------------------------------------------
def test_sentences_become_clauses() -> None:
    assert split_clauses("Hello there! How are you doing today? I hope all is well.") == [
        "Hello there!",
        "How are you doing today?",
        "I hope all is well.",
    ]


def test_first_clause_goes_out_at_a_comma_once_it_has_three_words() -> None:
    assert split_clauses("Well, I think that, honestly, this is a good idea. Yes.") == [
        "Well, I think that,",
        "honestly, this is a good idea.",
        "Yes.",
    ]


def test_short_first_comma_waits_for_more_words() -> None:
    assert split_clauses("Hi, how are you?") == ["Hi, how are you?"]


@pytest.mark.parametrize("mark", [";", ":", " \u2014", "\u2014", " -", " --", "..."])
def test_first_clause_may_end_at_other_pauses(mark: str) -> None:
    assert split_clauses(f"So here we are{mark} ready to go now.") == [f"So here we are{mark}", "ready to go now."]


def test_later_clauses_do_not_split_at_short_commas() -> None:
    text = "First things first. Then, after a while, we went home, and we slept."
    assert split_clauses(text) == ["First things first.", "Then, after a while, we went home, and we slept."]


def test_long_sentence_splits_at_a_comma_past_the_soft_limit() -> None:
    head = "This sentence keeps going " + "and going " * 12  # ~146 characters before the comma
    text = f"Okay. {head.strip()}, but it ends eventually with a few more words."
    clauses = split_clauses(text)
    assert clauses[0] == "Okay."
    assert clauses[1].endswith("going,") and len(clauses[1]) > SOFT_MAX_CHARS
    assert clauses[2] == "but it ends eventually with a few more words."


def test_hard_cap_cuts_at_a_word_boundary() -> None:
    words = [f"w{i:03d}" for i in range(200)]
    clauses = split_clauses("Start. " + " ".join(words) + ".")
    assert all(len(c) <= HARD_MAX_CHARS for c in clauses)
    assert len(clauses) >= 4
    assert " ".join(clauses) == "Start. " + " ".join(words) + "."


def test_hard_cap_prefers_the_last_pause() -> None:
    text = "Start. Then " + "alpha " * 10 + "beta, " + "gamma " * 60 + "end."
    clauses = split_clauses(text)
    assert clauses[1].endswith("beta,")
    assert all(len(c) <= HARD_MAX_CHARS for c in clauses)


def test_a_word_longer_than_the_cap_is_never_broken() -> None:
    url = "https://example.com/" + "a" * 300
    clauses = split_clauses(f"Look at this. {url} and more words here.")
    assert url in clauses
    assert " ".join(clauses) == f"Look at this. {url} and more words here."


def test_blank_line_ends_a_sentence_and_single_newline_is_a_pause() -> None:
    assert split_clauses("Shopping list\n\nApples and pears\nBread") == ["Shopping list", "Apples and pears Bread"]
    assert split_clauses("one two three\nfour five") == ["one two three", "four five"]


# -- where clauses never end ---------------------------------------------------------------------------------------
def test_numbers_and_decimals_stay_whole() -> None:
    assert split_clauses("The price rose 3.5 percent to 1,000 dollars. Then it fell to 0.75, oddly.") == [
        "The price rose 3.5 percent to 1,000 dollars.",
        "Then it fell to 0.75, oddly.",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Dr. Smith is here to see you now.",
        "Mr. and Mrs. Jones arrived late.",
        "We met Prof. Brown and St. John yesterday.",
        "Bring fruit e.g. Apples or pears to the picnic.",
        "It is cheap i.e. Under ten dollars.",
        "He moved to the U.S. Army base last year.",
        "Look at No. 5 on the list please.",
        "The meeting is on Jan. 3 at the office.",
        "Red and blue etc. and many more colors.",
        "This is Smith vs. Jones in court today.",
    ],
)
def test_abbreviations_do_not_end_a_clause(text: str) -> None:
    assert split_clauses(text) == [text]
    assert split_clauses(f"Okay. {text}") == ["Okay.", text]


def test_etc_ends_a_sentence_when_a_new_one_starts() -> None:
    assert split_clauses("We bought apples, pears, plums, etc. Then we left.") == [
        "We bought apples,",
        "pears, plums, etc.",
        "Then we left.",
    ]


def test_initials_stay_with_the_name() -> None:
    assert split_clauses("J. R. R. Tolkien wrote it. Read it.") == ["J. R. R. Tolkien wrote it.", "Read it."]


def test_urls_and_emails_stay_whole() -> None:
    text = "Visit https://example.com/a.b?c=1,2 or write to ada.lovelace@example.org. Thanks!"
    assert split_clauses(text) == [
        "Visit https://example.com/a.b?c=1,2 or write to ada.lovelace@example.org.",
        "Thanks!",
    ]


def test_ellipsis_inside_a_word_is_not_a_break() -> None:
    assert split_clauses("wait...what happened here") == ["wait...what happened here"]


def test_quotes_after_the_mark_stay_with_the_sentence() -> None:
    assert split_clauses('She said "Go home." Then she left.') == ['She said "Go home."', "Then she left."]
    assert split_clauses("It was great (really!) fun.") == ["It was great (really!)", "fun."]


def test_empty_and_whitespace_give_no_clauses() -> None:
    assert split_clauses("") == []
    assert split_clauses("  \n\t ") == []
    assert split_clauses("Hi.   \n\n   ") == ["Hi."]


# -- streaming -----------------------------------------------------------------------------------------------------
def test_feed_returns_a_clause_while_text_is_still_coming() -> None:
    splitter = ClauseSplitter()
    assert splitter.feed("Hello there") == []
    assert splitter.feed(". ") == []  # the next word's case decides "etc. and" vs "etc. Then"
    assert splitter.feed("How") == ["Hello there."]
    assert splitter.feed(" are you") == []
    assert splitter.flush() == ["How are you"]


def test_deltas_cut_inside_numbers_and_abbreviations() -> None:
    splitter = ClauseSplitter()
    out: list[str] = []
    for delta in ["It costs 3", ".", "5 dollars, said Dr", ". Smith", " today. Ok", "ay."]:
        out += splitter.feed(delta)
    out += splitter.flush()
    assert out == ["It costs 3.5 dollars,", "said Dr. Smith today.", "Okay."]


def test_opening_quote_waits_for_the_next_letter() -> None:
    splitter = ClauseSplitter()
    assert splitter.feed("Start here now. Then etc. ") == ["Start here now."]
    assert splitter.feed('"') == []  # the case of the next word is not known yet
    assert splitter.feed("And") == ["Then etc."]
    assert split_clauses('Start here now. Then etc. "and more" came.') == [
        "Start here now.",
        'Then etc. "and more" came.',
    ]


def test_flush_after_flush_is_empty() -> None:
    splitter = ClauseSplitter()
    splitter.feed("One two three.")
    assert splitter.flush() == ["One two three."]
    assert splitter.flush() == []


def test_bad_limits_are_rejected() -> None:
    with pytest.raises(ValueError):
        ClauseSplitter(soft_max_chars=300, hard_max_chars=200)


# -- properties over random texts ----------------------------------------------------------------------------------
_VOCABULARY = [
    "the", "a", "cat", "sat", "on", "mat", "I", "you", "we", "it", "Hello", "hello", "Dr.", "Mr.", "e.g.", "i.e.",
    "U.S.", "etc.", "etc", "J.", "No.", "5", "3.5", "1,000", "0.75", "https://x.org/a.b?c=1", "ada@example.com",
    "wait...what", "...", "\u2026", "-", "--", "\u2014", "\u2013", "word,", "word;", "word:", "word.", "Word!", "Why?",
    "(yes)", '"quoted."', "'single'", "\u201ccurly.\u201d", "\u00bfQu\u00e9?", "caf\u00e9", "\u00bb", "\u00ab",
    ".", ",", ";", "!", "?", "a.m.", "p.m.", "No.", "7", "St.", "(Dr.", "x.",
]  # fmt: skip
_SPACES = [" ", " ", " ", "  ", "\n", "\n\n", "\t", " \r\n ", "\u00a0", "\u3000", "\u2028", "\x1c"]


def _random_text(rng: random.Random) -> str:
    count = rng.randint(0, 120)
    parts = [rng.choice(_SPACES) if rng.random() < 0.2 else ""]
    for _ in range(count):
        if rng.random() < 0.03:
            parts.append("x" * rng.randint(1, 300))
        else:
            parts.append(rng.choice(_VOCABULARY))
        parts.append(rng.choice(_SPACES))
    if rng.random() < 0.5:
        parts.pop()
    return "".join(parts)


@pytest.mark.parametrize("seed", range(8))
def test_random_texts_reassemble_exactly(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(150):
        text = _random_text(rng)
        whole = split_clauses(text)
        assert " ".join(whole) == normalised(text)
        assert all(clause and clause == clause.strip() and "  " not in clause for clause in whole)
        assert all(len(clause) <= HARD_MAX_CHARS or " " not in clause for clause in whole)
        assert all(not any(ch.isspace() and ch != " " for ch in clause) for clause in whole)
        # streaming in random chunks gives exactly the same clauses as splitting the whole text
        assert stream(text, seed=rng.randint(0, 10**6)) == whole


def test_char_by_char_equals_whole() -> None:
    rng = random.Random(99)
    for _ in range(40):
        text = _random_text(rng)
        assert stream(text, sizes=[1]) == split_clauses(text)


def test_small_limits_still_reassemble() -> None:
    rng = random.Random(7)
    for _ in range(100):
        text = _random_text(rng)
        clauses = split_clauses(text, first_min_words=1, soft_max_chars=10, hard_max_chars=30)
        assert " ".join(clauses) == normalised(text)
        assert all(len(clause) <= 30 or " " not in clause for clause in clauses)
