"""When a provider request that failed before its first byte is tried again: the one rule the llm and the tts share.

Before anything reached the listener a retry is free; after it, a retry would repeat words, so only the opening of a
request is retried (each service's stream code decides where that line is). Retryable: HTTP 408, 409, 429 and every
5xx, and connection failures. The provider's Retry-After is honoured when it is at most `max_wait_s`; a longer wish is
not waited out: the caller fails at once with the provider's own sentence rather than hold a live turn for it.
Otherwise exponential backoff with jitter, so that sessions refused together do not all retry together.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

RETRYABLE_STATUS = frozenset({408, 409, 429})  # and every 5xx


def retryable_status(status: int) -> bool:
    """Whether the same request may succeed later (timeouts, conflicts, rate limits, server failures)."""
    return status in RETRYABLE_STATUS or status >= 500


@dataclass(frozen=True)
class RetryPlan:
    attempts: int = 3  # the first try included
    backoff_s: float = 0.25  # before the second try; doubled each time after
    max_backoff_s: float = 8.0
    max_wait_s: float = 8.0  # a longer Retry-After is not waited for
    jitter: float = 0.2  # the backoff is scaled by uniform(1 - jitter, 1 + jitter)

    def delay(self, failures: int, retryable: bool, retry_after_s: float | None) -> float | None:
        """Seconds to wait before the next try after `failures` failed tries (1 after the first), or None: give up."""
        if not retryable or failures >= self.attempts:
            return None
        if retry_after_s is not None:
            return retry_after_s if retry_after_s <= self.max_wait_s else None
        backoff = min(self.max_backoff_s, self.backoff_s * 2 ** (failures - 1))
        return backoff * random.uniform(1 - self.jitter, 1 + self.jitter)
