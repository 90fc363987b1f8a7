"""services/common/retry_after.py: the one Retry-After parser the llm and the tts services use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from services.common.retry_after import retry_after_s
from services.llm import openai as llm_openai
from services.tts import remote

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_seconds_milliseconds_and_dates() -> None:
    assert retry_after_s({"Retry-After": "2"}) == 2.0
    assert retry_after_s({"retry-after": " 0.05 "}) == pytest.approx(0.05)  # fractions, as test servers send them
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25  # OpenAI's milliseconds win
    assert retry_after_s({"retry-after-ms": "soon", "retry-after": "9"}) == 9.0  # ... when they parse
    assert retry_after_s({"retry-after": "-3"}) == 0.0
    date = format_datetime(NOW + timedelta(seconds=7), usegmt=True)
    assert retry_after_s({"Retry-After": date}, now=NOW.timestamp()) == pytest.approx(7)
    past = format_datetime(NOW - timedelta(seconds=30), usegmt=True)
    assert retry_after_s({"Retry-After": past}, now=NOW.timestamp()) == 0.0
    zoneless = (NOW + timedelta(seconds=5)).strftime("%a, %d %b %Y %H:%M:%S -0000")  # read as GMT
    assert retry_after_s({"Retry-After": zoneless}, now=NOW.timestamp()) == pytest.approx(5)


def test_any_header_mapping_in_any_case() -> None:
    headers = httpx.Headers({"Retry-After": "3"})
    assert retry_after_s(headers) == 3.0
    assert retry_after_s(httpx.Headers({"RETRY-AFTER-MS": "1500"})) == 1.5


@pytest.mark.parametrize(
    "value",
    [
        "soon",
        "",
        "Wed, 99 Foo 2026 25:61:00 GMT",  # a malformed HTTP date: the old tts copy raised from its `except`
        "Mon, 32 Jan 2026 00:00:00 GMT",
        "Thu, 01 Jan 10000 00:00:00 GMT",
        "nan",
        "inf",
        "1e400",
    ],
)
def test_garbage_is_no_wish(value: str) -> None:
    assert retry_after_s({"Retry-After": value}, now=NOW.timestamp()) is None


def test_absent_headers_are_no_wish() -> None:
    assert retry_after_s(None) is None
    assert retry_after_s({}) is None
    assert retry_after_s({"content-type": "application/json"}) is None


def test_max_s_caps_the_wait() -> None:
    assert retry_after_s({"retry-after": "3600"}, max_s=20.0) == 20.0
    assert retry_after_s({"retry-after": "3"}, max_s=20.0) == 3.0
    assert retry_after_s({"retry-after": "garbage"}, max_s=20.0) is None


def test_llm_and_tts_use_the_one_parser() -> None:
    assert llm_openai.retry_after_s is retry_after_s and remote.retry_after_s is retry_after_s
    malformed = {"Retry-After": "Wed, 99 Foo 2026 25:61:00 GMT"}
    error = remote.status_error("ElevenLabs", 429, "slow down", malformed, "ELEVENLABS_API_KEY", [])
    assert error.retryable and error.retry_after_s is None  # the caller's backoff applies
    assert remote.status_error("OpenAI", 503, "", {"Retry-After": "1.5"}, "K", []).retry_after_s == 1.5
