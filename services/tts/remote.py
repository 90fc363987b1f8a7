"""What the cloud speech engines share: their error type, retries before the first audio byte, timeouts, and keeping
API keys out of every message.

A provider call can fail in two places. Before any audio (refused key, rate limit, overload), a retry is free: the
listener has heard nothing yet, so 429 and 5xx are retried (honouring Retry-After). After audio has started, a retry
would repeat words, so the error goes up and the service lets the offline voice finish the utterance.

Provider text in an error is scrubbed (services.common.scrub, the copy the llm uses too) of keys, bearer tokens and
internal addresses before it becomes a message."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import grpc

from services.common.provider_retry import RetryPlan, retryable_status
from services.common.retry_after import retry_after_s
from services.common.scrub import scrub
from services.tts.engine import EngineError, VoiceInfo

log = logging.getLogger(__name__)

T = TypeVar("T")


class ProviderError(EngineError):
    """A provider call failed. `code` is the gRPC code the utterance error carries; `retryable` says whether the
    same request may succeed later (429, 5xx, connection trouble); `retry_after_s` is the server's own wish."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        retryable: bool = False,
        retry_after_s: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.status = status


_STATUS_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    402: grpc.StatusCode.RESOURCE_EXHAUSTED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
}

_HINTS: dict[int, str] = {
    401: "the API key was rejected; check {key_var}",
    402: "the account has no credits left",
    403: "the API key may not use this voice or model",
    404: "unknown voice or model",
    429: "rate limited or out of quota",
}


def status_error(
    provider: str, status: int, detail: str, headers: Mapping[str, str] | None, key_var: str, secrets: Iterable[str]
) -> ProviderError:
    """A ProviderError for an HTTP error status, with the provider's own explanation (scrubbed, shortened)."""
    code = _STATUS_CODES.get(status, grpc.StatusCode.UNAVAILABLE if status >= 500 else grpc.StatusCode.UNKNOWN)
    retryable = retryable_status(status)
    hint = _HINTS.get(status, "the service is unavailable" if status >= 500 else "request failed")
    detail = scrub(detail, *secrets)
    message = f"{provider} returned HTTP {status}: {hint.format(key_var=key_var)}" + (f" ({detail})" if detail else "")
    return ProviderError(code, message, retryable=retryable, retry_after_s=retry_after_s(headers), status=status)


@dataclass(frozen=True)
class RetryPolicy(RetryPlan):
    """Deadlines and retries of one provider request (environment: TTS_FIRST_BYTE_TIMEOUT_S, TTS_STALL_TIMEOUT_S,
    TTS_RETRIES); when to retry is services.common.provider_retry's rule, all before any audio."""

    first_byte_timeout_s: float = 10.0
    stall_timeout_s: float = 10.0


async def _close(iterator: AsyncIterator) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


async def open_stream(
    start: Callable[[], AsyncIterator[T]],
    classify: Callable[[BaseException], ProviderError],
    policy: RetryPolicy,
    provider: str,
) -> tuple[AsyncIterator[T], T | None]:
    """Starts a streaming request and waits for its first item, retrying retryable failures before it.

    Returns the iterator and its first item (None if the stream was empty). Raises ProviderError."""
    for attempt in range(1, policy.attempts + 1):
        iterator = start()
        try:
            first = await asyncio.wait_for(anext(iterator), policy.first_byte_timeout_s)
            return iterator, first
        except StopAsyncIteration:
            return iterator, None
        except TimeoutError:
            await _close(iterator)
            raise ProviderError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{provider} sent no audio within {policy.first_byte_timeout_s:g} s",
                retryable=True,
            ) from None
        except ProviderError as error:
            await _close(iterator)
            failure = error
        except Exception as error:
            await _close(iterator)
            failure = classify(error)
        wait = policy.delay(attempt, failure.retryable, failure.retry_after_s)
        if wait is None:
            raise failure from None
        log.info(
            "provider request failed; retrying",
            extra={"provider": provider, "attempt": attempt, "wait_s": round(wait, 3), "reason": failure.message},
        )
        await asyncio.sleep(wait)
    raise AssertionError("unreachable")


async def next_item(
    iterator: AsyncIterator[T], classify: Callable[[BaseException], ProviderError], policy: RetryPolicy, provider: str
) -> T:
    """The stream's next item within the stall deadline; raises StopAsyncIteration at its end, ProviderError on
    failure (never retried: audio has been sent)."""
    try:
        return await asyncio.wait_for(anext(iterator), policy.stall_timeout_s)
    except StopAsyncIteration:
        raise
    except TimeoutError:
        raise ProviderError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"{provider} stalled: no data for {policy.stall_timeout_s:g} s",
            retryable=True,
        ) from None
    except ProviderError:
        raise
    except Exception as error:
        raise classify(error) from None


async def provider_items(
    start: Callable[[], AsyncIterator[T]],
    classify: Callable[[BaseException], ProviderError],
    policy: RetryPolicy,
    provider: str,
) -> AsyncIterator[T]:
    """Every item of a provider's streamed answer: the request retried until its first item (`open_stream`), each
    later item within the stall deadline (`next_item`), the stream closed however the caller stops. Use it under
    `contextlib.aclosing` so an abandoned answer closes its connection at once. Raises ProviderError; an answer
    without a single item is one (UNAVAILABLE, retryable)."""
    stream, item = await open_stream(start, classify, policy, provider)
    if item is None:
        await _close(stream)
        raise no_audio(provider)
    try:
        while True:
            yield item
            try:
                item = await next_item(stream, classify, policy, provider)
            except StopAsyncIteration:
                return
    finally:
        await _close(stream)


def no_audio(provider: str) -> ProviderError:
    return ProviderError(grpc.StatusCode.UNAVAILABLE, f"{provider} returned no audio", retryable=True)


def transport_error(provider: str, error: BaseException, secrets: Iterable[str]) -> ProviderError:
    """A ProviderError for a connection-level failure (refused, reset, dropped mid-stream, timed out)."""
    name = type(error).__name__
    text = scrub(str(error), *secrets, limit=200)
    if "Timeout" in name:
        return ProviderError(grpc.StatusCode.DEADLINE_EXCEEDED, f"{provider} timed out ({name})", retryable=True)
    return ProviderError(
        grpc.StatusCode.UNAVAILABLE,
        f"{provider} connection failed ({name}{': ' + text if text else ''})",
        retryable=True,
    )


class NamedVoices:
    """Voices named `<provider>:<voice>[@<model>]`: the configured ones are listed, and any well-formed name
    resolves, so a session can pick a provider voice or model nobody listed. Mixed into cloud engines."""

    voice_name: re.Pattern[str]
    _voices: list[VoiceInfo]

    def _info(self, voice: str, model: str | None) -> VoiceInfo:
        raise NotImplementedError

    def voices(self) -> list[VoiceInfo]:
        return list(self._voices)

    def resolve_voice(self, name: str) -> VoiceInfo | None:
        match = self.voice_name.match(name)
        return None if match is None else self._info(match.group(1), match.group(2))
