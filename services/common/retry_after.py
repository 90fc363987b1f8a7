"""How long a provider asked us to wait before retrying: `Retry-After` (seconds or an HTTP date) or `retry-after-ms`.

Why here: the llm service (OpenAI-compatible chat) and the tts service (ElevenLabs, OpenAI speech) both retry a
provider's 429 and 5xx answers and honour the server's wish. They used to parse the header each in their own way, and
the tts copy raised from inside its own `except` on a malformed date; one parser gives both services one set of rules.

Rules: `retry-after-ms` (OpenAI's, milliseconds) wins when it parses; otherwise `Retry-After` as delta seconds
(fractions accepted, as servers send them) or as an HTTP date (a date without a zone is read as GMT, as HTTP dates
are). A negative wait or a date in the past reads as 0. Anything else (garbage, a malformed date, NaN, infinity) reads
as None: "no wish", the caller's own backoff applies. `max_s`, when given, caps the result."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from datetime import UTC
from typing import Any

__all__ = ["retry_after_s"]


def _seconds(raw: str, scale: float = 1.0) -> float | None:
    try:
        value = float(raw) * scale
    except ValueError:
        return None
    return max(0.0, value) if math.isfinite(value) else None


def _date(raw: str, now: float | None) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        wait = when.timestamp() - (time.time() if now is None else now)
    except (OverflowError, OSError, ValueError):
        return None
    return max(0.0, wait)


def retry_after_s(
    headers: Mapping[str, Any] | None, now: float | None = None, *, max_s: float | None = None
) -> float | None:
    """Seconds the server asked us to wait, from response `headers` (any mapping; names match in any case), at most
    `max_s`; None when the headers hold no usable wish. `now` (epoch seconds) is for tests of the HTTP-date form."""
    if not headers:
        return None
    lower = {str(name).lower(): str(value).strip() for name, value in headers.items()}
    wait = _seconds(lower["retry-after-ms"], 1e-3) if lower.get("retry-after-ms") else None
    if wait is None and lower.get("retry-after"):
        raw = lower["retry-after"]
        wait = _seconds(raw)
        if wait is None:
            wait = _date(raw, now)
    if wait is None:
        return None
    return wait if max_s is None else min(wait, max_s)
