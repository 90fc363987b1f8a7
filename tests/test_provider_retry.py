"""services/common/provider_retry.py: the one rule for retrying a provider request before its first byte, and that
the llm and the tts both follow it."""

from __future__ import annotations

import pytest

from services.common.provider_retry import RetryPlan, retryable_status
from services.llm.openai import OpenAIChat
from services.tts.remote import RetryPolicy, status_error


def test_which_statuses_are_retried() -> None:
    assert [s for s in (400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503) if retryable_status(s)] == [
        408, 409, 429, 500, 502, 503,
    ]  # fmt: skip


def test_the_delay_before_each_try() -> None:
    plan = RetryPlan(attempts=4, backoff_s=0.5, max_backoff_s=1.5, max_wait_s=8.0, jitter=0.2)
    assert plan.delay(1, False, None) is None, "not retryable"
    assert plan.delay(4, True, None) is None, "every attempt used"
    assert plan.delay(1, True, 3.0) == 3.0, "the provider's Retry-After"
    assert plan.delay(1, True, 9.0) is None, "a longer wish is not waited out"
    for failures, base in ((1, 0.5), (2, 1.0), (3, 1.5)):  # doubling, capped
        delays = {plan.delay(failures, True, None) for _ in range(50)}
        assert all(d is not None and 0.8 * base <= d <= 1.2 * base for d in delays)
        assert len(delays) > 1, "jittered"


def test_the_llm_and_the_tts_follow_the_one_rule() -> None:
    assert issubclass(RetryPolicy, RetryPlan)
    chat = OpenAIChat(api_key="sk-test", base_url="http://127.0.0.1:9/v1", max_retries=2, backoff_base_s=0.1)
    assert isinstance(chat.retry, RetryPlan) and chat.retry.attempts == 3 and chat.retry.backoff_s == 0.1
    assert status_error("ElevenLabs", 409, "", {}, "KEY", []).retryable
    assert not status_error("ElevenLabs", 403, "", {}, "KEY", []).retryable


@pytest.mark.parametrize("retry_after", [None, 0.0])
def test_zero_or_no_wish_still_retries(retry_after: float | None) -> None:
    assert RetryPlan().delay(1, True, retry_after) is not None
