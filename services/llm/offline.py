"""A conversational persona that needs no API key and no model, so the whole stack runs (and is testable) offline.

It is a pattern-matching persona in the spirit of ELIZA, not a language model: it recognises greetings, questions
about itself, "how are you", time and date questions, thanks, goodbyes and the user telling (or asking for) their
name; anything else is reflected back with pronouns swapped ("I feel lost" -> "Why do you feel lost?"). Replies are a
few sentences, usually ending in a follow-up question, chosen deterministically from the conversation text, and are
streamed word by word with a small delay so the rest of the pipeline sees the timing of a real streaming LLM.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime

from services.common.providers import OFFLINE
from services.llm.provider import ROLE_USER, ChatProvider

DEFAULT_NAME = "Nova"
DEFAULT_TOKEN_DELAY_S = 0.015
_MAX_REFLECTED_WORDS = 16

_NAME_TOLD = re.compile(
    r"\b(?:my name is|my name's|i am called|i'm called|call me|name's)\s+([^\W\d_][\w'-]{0,40})", re.IGNORECASE
)
_NOT_A_NAME = frozenset({"not", "a", "an", "the", "what", "just", "no", "never", "anything", "nothing", "me"})
_PERSONA_NAME = re.compile(r"\b(?i:your name is|you are called|you are|you're|call yourself)\s+([A-Z][\w'-]{0,40})")
_NAME_ASKED = re.compile(
    r"\b(?:what(?:'s| is) my name|do you (?:know|remember) my name|who am i|what am i called|tell me my name)\b"
)
_GREETING = re.compile(r"^(?:hi|hello|hey|hiya|howdy|greetings|yo|good (?:morning|afternoon|evening|day))\b")
_WHO_ARE_YOU = re.compile(
    r"\b(?:who are you|what are you|what(?:'s| is) your name|who am i (?:talking|speaking) (?:to|with)"
    r"|are you (?:a |an )?(?:bot|robot|human|real|ai|person|machine))\b"
)
_HOW_ARE_YOU = re.compile(r"\b(?:how are you|how're you|how are things|how(?:'s| is) it going|how do you do)\b")
_TIME = re.compile(r"\b(?:what time|time is it|the time now|current time|tell me the time)\b")
_DATE = re.compile(
    r"\b(?:what(?:'s| is) (?:the |today's )?date|what day|today's date|date today|which day|what's today)\b"
)
_THANKS = re.compile(r"\b(?:thanks|thank you|thx|cheers|much appreciated)\b")
_GOODBYE = re.compile(r"\b(?:bye|goodbye|good night|see you|farewell|talk to you later|gotta go|have to go)\b")
_YES = re.compile(r"^(?:yes|yeah|yep|sure|of course|definitely|absolutely|right|ok|okay)\b[\s.!]*$")
_NO = re.compile(r"^(?:no|nope|nah|not really|never)\b[\s.!]*$")

# (pattern on the user's words, replies); {0} is the `frag` group with pronouns swapped, {1} the `verb` group.
_REFLECTIONS: list[tuple[re.Pattern[str], list[str]]] = [
    (
        re.compile(r"\bi(?:(?: am|'m) feeling| feel) (?P<frag>.+)", re.IGNORECASE),
        ["Why do you feel {0}?", "How long have you felt {0}?", "What do you think makes you feel {0}?"],
    ),
    (
        re.compile(r"\bi (?:can't|cannot|can not) (?P<frag>.+)", re.IGNORECASE),
        ["What makes you think you can't {0}?", "Have you ever tried to {0}?", "What would help you {0}?"],
    ),
    (
        re.compile(r"\bi (?P<verb>want|need) (?P<frag>.+)", re.IGNORECASE),
        ["Why do you {1} {0}?", "What would change for you if you had {0}?", "Tell me more about why you {1} {0}."],
    ),
    (
        re.compile(r"\bi (?P<verb>love|like|hate|enjoy|miss) (?P<frag>.+)", re.IGNORECASE),
        ["What is it about {0} that you {1}?", "How long have you felt that way about {0}?"],
    ),
    (
        re.compile(r"\bi think (?:that )?(?P<frag>.+)", re.IGNORECASE),
        ["What makes you think {0}?", "Do you really believe {0}?", "How sure are you that {0}?"],
    ),
    (
        re.compile(r"\bi remember (?P<frag>.+)", re.IGNORECASE),
        ["What else do you remember about {0}?", "Why does {0} come to mind right now?"],
    ),
    (
        re.compile(r"\bi(?: am|'m) (?P<frag>.+)", re.IGNORECASE),
        ["How long have you been {0}?", "Why do you say you are {0}?", "How does being {0} feel for you?"],
    ),
    (
        re.compile(r"\byou(?: are|'re) (?P<frag>.+)", re.IGNORECASE),
        ["What makes you think I am {0}?", "Does it please you to think I am {0}?"],
    ),
    (
        re.compile(r"\bcan you (?P<frag>.+)", re.IGNORECASE),
        ["I wish I could {0}, but I am only a simple offline persona.", "Why would you like me to {0}?"],
    ),
    (
        re.compile(r"\bdo you (?P<frag>.+)", re.IGNORECASE),
        ["Why do you ask whether I {0}?", "What would it mean to you if I did {0}?"],
    ),
    (
        re.compile(r"\bbecause (?P<frag>.+)", re.IGNORECASE),
        ["Is that the real reason, that {0}?", "What other reasons come to mind, besides that {0}?"],
    ),
    (
        re.compile(
            r"\bmy (?P<frag>(?:mother|father|mom|mum|dad|sister|brother|friend|wife|husband|partner|boss|job|work"
            r"|family|child|son|daughter|dog|cat)\w*)\b",
            re.IGNORECASE,
        ),
        ["Tell me more about your {0}.", "How do you feel about your {0}?"],
    ),
]

_SWAPS = {
    "i": "you", "me": "you", "my": "your", "mine": "yours", "myself": "yourself", "am": "are", "i'm": "you're",
    "i've": "you've", "i'll": "you'll", "i'd": "you'd", "your": "my", "yours": "mine", "yourself": "myself",
    "you're": "I'm", "you've": "I've", "you'll": "I'll", "you'd": "I'd", "we": "you", "us": "you", "our": "your",
}  # fmt: skip
_SUBJECT_VERBS = frozenset(
    {
        "are", "were", "have", "had", "do", "did", "don't", "didn't", "can", "can't", "could", "would", "should",
        "will", "won't", "know", "think", "like", "love", "hate", "want", "need", "seem", "feel", "said", "say", "make",
        "get", "go", "look", "never", "always", "just", "really", "understand", "care", "listen", "mean",
    }
)  # fmt: skip

_LEADS = ["I see.", "I hear you.", "Mm, I understand.", "Okay.", "That's interesting.", "Thank you for telling me."]
_FOLLOW_UPS = [
    "What else is on your mind?",
    "How does that make you feel?",
    "What would you like to talk about next?",
    "Is there anything you'd like to ask me?",
    "What made you think of that?",
    "How has your day been so far?",
]
_FALLBACKS = [
    "You said {0}. Tell me more about that.",
    "So {0}. What does that mean to you?",
    "{0}, you say. Why do you think that is?",
    "I'm not sure I follow. You said {0}. Can you say more?",
]
_QUESTION_FALLBACKS = [
    "That's a good question, and I'm only a simple offline persona, so I don't really know. What do you think?",
    "Hmm, I can't look that up, since I run entirely offline. What's your own guess?",
]


def _clean(text: str) -> str:
    return " ".join(text.replace("\u2019", "'").replace("\u2018", "'").split())


def _reflect(fragment: str) -> str:
    """Swaps first and second person so the user's words can be said back to them."""
    fragment = re.split(r"[.!?;]", fragment, maxsplit=1)[0].strip(" ,:-")
    words = fragment.split()[:_MAX_REFLECTED_WORDS]
    out = []
    for index, word in enumerate(words):
        bare = word.strip(",").lower()
        trail = "," if word.endswith(",") else ""
        previous = words[index - 1].strip(",").lower() if index else ""
        following = words[index + 1].strip(",").lower() if index + 1 < len(words) else ""
        if bare == "you":
            swapped = "I" if index == 0 or following in _SUBJECT_VERBS else "me"
        elif bare == "are" and previous == "you":
            swapped = "am"
        elif bare == "were" and previous == "you":
            swapped = "was"
        elif bare == "was" and previous == "i":
            swapped = "were"
        else:
            swapped = _SWAPS.get(bare, word.strip(","))
        out.append(swapped + trail)
    return " ".join(out)


class OfflinePersona(ChatProvider):
    """Rule-based stand-in for an LLM (see the module docstring): deterministic for a given conversation."""

    name = OFFLINE

    def __init__(
        self, token_delay_s: float = DEFAULT_TOKEN_DELAY_S, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.token_delay_s = max(0.0, token_delay_s)
        self._clock = clock or (lambda: datetime.now().astimezone())

    async def stream_reply(self, history: Sequence[tuple[str, str]], persona: str) -> AsyncIterator[str]:
        reply = self.reply(history, persona)
        for token in re.findall(r"\S+\s*", reply):
            await asyncio.sleep(self.token_delay_s)
            yield token

    def reply(self, history: Sequence[tuple[str, str]], persona: str) -> str:
        """The whole reply to the last user turn of `history`."""
        user_turns = [_clean(text) for role, text in history if role == ROLE_USER]
        said = user_turns[-1] if user_turns else ""
        lower = said.lower()
        seed = hashlib.sha256("\x1e".join(f"{role}\x1f{text}" for role, text in history).encode()).digest()
        rng = random.Random(int.from_bytes(seed[:8], "big"))
        me = self._persona_name(persona)
        user_name = self._user_name(user_turns)

        told = _NAME_TOLD.search(said)
        if told and told.group(1).lower() not in _NOT_A_NAME:
            name = told.group(1).capitalize()
            return (
                f"Nice to meet you, {name}! That's a lovely name, and I'll remember it while we talk. "
                f"I'm {me}. {rng.choice(_FOLLOW_UPS)}"
            )
        if _NAME_ASKED.search(lower):
            if user_name:
                follow_up = rng.choice(_FOLLOW_UPS)
                return f"Your name is {user_name}. You told me earlier, and I haven't forgotten. {follow_up}"
            return "You haven't told me your name yet. What should I call you?"
        if _WHO_ARE_YOU.search(lower):
            return (
                f"I'm {me}, a simple conversational persona that runs entirely offline. "
                "I'm not a real language model: I match patterns in what you say and answer from a small set of "
                "replies, so please be patient with me. What would you like to talk about?"
            )
        if _TIME.search(lower):
            now = self._clock()
            return f"By my clock it's {now.strftime('%I:%M %p').lstrip('0')} right now. {rng.choice(_FOLLOW_UPS)}"
        if _DATE.search(lower):
            now = self._clock()
            return f"Today is {now.strftime('%A, %B')} {now.day}, {now.year}. {rng.choice(_FOLLOW_UPS)}"
        if _GOODBYE.search(lower):
            who = f", {user_name}" if user_name else ""
            return f"Goodbye{who}! It was lovely talking with you. Take care, and come back any time."
        if _THANKS.search(lower):
            return f"You're very welcome! I'm glad I could help. {rng.choice(_FOLLOW_UPS)}"
        if _HOW_ARE_YOU.search(lower):
            return (
                "I'm doing well, thank you for asking! Every conversation keeps me busy in a good way. "
                "And how are you today?"
            )
        if _GREETING.search(lower):
            who = f", {user_name}" if user_name else ""
            return f"Hello{who}! It's good to see you. I'm {me}, and I'm happy to chat. What's on your mind today?"
        if _YES.match(lower):
            return f"{rng.choice(['I see.', 'Alright.', 'Good.'])} Tell me a little more about that, if you like."
        if _NO.match(lower):
            return "Okay, that's fine. Is there something else you'd like to talk about?"
        for pattern, templates in _REFLECTIONS:
            match = pattern.search(said)
            if match:
                fragment = _reflect(match.group("frag"))
                verb = (match.groupdict().get("verb") or "").lower()
                if fragment:
                    answer = rng.choice(templates).format(fragment, verb)
                    return f"{rng.choice(_LEADS)} {answer}"
        if said.endswith("?"):
            return rng.choice(_QUESTION_FALLBACKS)
        fragment = _reflect(said)
        if not fragment:
            return f"I'm listening. {rng.choice(_FOLLOW_UPS)}"
        answer = rng.choice(_FALLBACKS).format(fragment)
        return answer[0].upper() + answer[1:]

    @staticmethod
    def _persona_name(persona: str) -> str:
        match = _PERSONA_NAME.search(persona)
        return match.group(1) if match else DEFAULT_NAME

    @staticmethod
    def _user_name(user_turns: Sequence[str]) -> str:
        for text in reversed(user_turns):
            for match in reversed(list(_NAME_TOLD.finditer(text))):
                if match.group(1).lower() not in _NOT_A_NAME:
                    return match.group(1).capitalize()
        return ""
