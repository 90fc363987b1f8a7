"""Scrubbing text that leaves a service: what a client may read, and what a log line may hold.

Why: a provider's error message, or an exception's text, may echo what the process knows and no caller should: an API
key the server saw (OpenAI quotes a wrong key back), a bearer header, a key in a URL's query, credentials in a URL,
and internal addresses (a self-hosted model server's IP, a peer's `host:port`, a cluster DNS name) that tell an
anonymous caller where to aim. The llm and the tts services both relay provider text, so they share this one copy:
a pattern added here protects both.

Two strengths:
- `scrub` for clients: secrets *and* addresses replaced, control characters removed, whitespace folded, length
  capped. Unexpected exceptions should not reach clients at all (send a fixed sentence; see `INTERNAL_ERROR`).
- `redact` for logs: secrets replaced, addresses kept (an operator needs them), line breaks kept (tracebacks).
"""

from __future__ import annotations

import re
import traceback

REDACTED = "[redacted]"
ADDRESS = "[address]"
MAX_MESSAGE_CHARS = 300
MIN_SECRET_CHARS = 4  # a shorter "secret" would redact ordinary words
MAX_INPUT_CHARS = 65536  # a longer text (an error page) is cut first, at whitespace: the patterns cost ~1 s per MB
INTERNAL_ERROR = "an internal error occurred (the service's log has the details)"

# -- secrets --------------------------------------------------------------------------------------------------------
_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]{0,30}://)[^/\s@]+@")  # scheme://user:password@host
_BEARER = re.compile(r"(?i)\bbearer\s+[^\s\"'<>,;]+")
_AUTH_HEADER = re.compile(
    r"(?i)\b((?:proxy-)?authorization|x-api-key|xi-api-key|api-key|openai-api-key|x-goog-api-key|cookie|set-cookie)"
    r"(\"?'?\s*[:=]\s*\"?'?)(?!bearer\s)(?:(?:basic|digest|token)\s+)?[^\s\"',;&]+"
)
_KEY_PARAM = re.compile(
    r"(?i)(?<![A-Za-z0-9_])((?:[a-z0-9_]*[_-])?(?:api[_-]?key|key|access[_-]?token|refresh[_-]?token|token|secret|"
    r"password|passwd|pwd|signature|sig|credential|auth))(\"?'?\s*[=]\s*\"?'?|\"?'?\s*:\s*\"?'?(?=\S{8,}))"
    r"[^\s\"'&,;#]+"
)
_KEY_LIKE = re.compile(
    r"\b(?:"
    r"(?:sk|rk|pk)-[A-Za-z0-9_\-*]{6,}"  # OpenAI and compatible servers (sk-..., sk-proj-...)
    r"|sk_[A-Za-z0-9]{16,}"  # ElevenLabs
    r"|xi-[A-Za-z0-9]{16,}"
    r"|AIza[0-9A-Za-z_\-]{20,}"  # Google
    r"|AKIA[0-9A-Z]{16}"  # AWS access key ids
    r"|hf_[A-Za-z0-9]{20,}"  # Hugging Face
    r"|gh[pousr]_[A-Za-z0-9]{20,}"  # GitHub
    r"|xai-[A-Za-z0-9]{16,}"
    r"|eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*"  # JWTs
    r")"
)

# -- addresses ------------------------------------------------------------------------------------------------------
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.\-]{0,30}://[^\s\"'<>]*[^\s\"'<>.,;:!?)\]}]")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?(?![\w.])")
_IPV6 = re.compile(
    r"\[[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.%\w]*\](?::\d{1,5})?"  # [fe80::1]:8080
    r"|(?<![\w:])(?=[0-9A-Fa-f:]*::)(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"  # fe80::1, ::1
    r"|(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}(?![\w:])"  # all eight groups
)
_HOST_PORT = re.compile(
    r"(?<![\w.\-/@])"
    r"(?:localhost|[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9\-]+)+|[A-Za-z][A-Za-z0-9\-]*(?=:\d{4,5}\b))"
    r":\d{2,5}\b"
)  # api.example.com:443, llm:50052 (a bare name only with a 4-5 digit port: "code:429" stays)
_INTERNAL_HOST = re.compile(
    r"(?i)(?<![\w.\-])[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.(?:local|localdomain|internal|intranet|lan|corp|home\.arpa|svc)"
    r"(?![\w\-])"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _bounded(text: str) -> str:
    """At most MAX_INPUT_CHARS of `text`, cut at whitespace so that no secret is cut in two (a half key would no
    longer match and would leak); a window without whitespace is one blob and goes whole."""
    if len(text) <= MAX_INPUT_CHARS:
        return text
    window = text[:MAX_INPUT_CHARS]
    cut = max(window.rfind(space) for space in " \t\r\n")
    return (window[:cut] if cut > 0 else "") + f" \u2026 ({len(text) - max(cut, 0)} more characters)"


def redact(text: str, *secrets: str | None) -> str:
    """`text` without the given secrets and anything that looks like a credential; for logs (addresses stay)."""
    text = _bounded(text)
    text = _USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)
    text = _BEARER.sub("Bearer " + REDACTED, text)
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    text = _KEY_PARAM.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    text = _KEY_LIKE.sub(REDACTED, text)
    for secret in secrets:  # after the patterns, so a key they match goes whole, not as `sk-test-[redacted]`
        if secret and len(secret) >= MIN_SECRET_CHARS:
            text = text.replace(secret, REDACTED)
    return text


def strip_addresses(text: str) -> str:
    """`text` with URLs, IP addresses, `host:port` pairs and internal host names replaced by ADDRESS."""
    for pattern in (_URL, _IPV6, _IPV4, _HOST_PORT, _INTERNAL_HOST):
        text = pattern.sub(ADDRESS, text)
    return text


def scrub(text: str, *secrets: str | None, limit: int | None = MAX_MESSAGE_CHARS) -> str:
    """`text` fit for a client: no secrets (the given ones and credential-like strings), no internal addresses, no
    control characters, one line, at most `limit` characters (None: no cap)."""
    text = redact(strip_addresses(_bounded(text)), *secrets)  # addresses first: a URL goes whole, query and all
    text = " ".join(_CONTROL.sub(" ", text).split())
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + "\u2026"
    return text


def redact_exception(error: BaseException, *secrets: str | None) -> str:
    """The exception with its traceback, redacted: the full detail for a log line, without keys."""
    return redact("".join(traceback.format_exception(error)).rstrip(), *secrets)
