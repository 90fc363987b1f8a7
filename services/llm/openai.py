"""OpenAI-compatible chat completions (OpenAI, vLLM, Ollama, llama.cpp server, ...) through the official `openai` SDK.

Only base URL and model differ between those servers. The SDK's own retries are off (`max_retries=0`) because this
provider retries itself, and only while nothing has been yielded: a reply that has started is never silently
restarted. Deadlines are asyncio timeouts around each wait (until the first token, then between chunks), so a
stalled upstream ends the turn on time. Closing the generator (the service cancelling a turn) closes the HTTP
response at once, which drops the connection, so the server stops generating and no more tokens are paid for.

API keys never reach a log record or an error message: provider messages are scrubbed (services.common.scrub) of the
key and of anything that looks like a credential before they are used, and request headers are never logged. What a
client reads names no address either (a self-hosted server's URL or IP tells an anonymous caller where to aim): the
provider's URL and the full failure go to the log only, and an unexpected exception reaches the client as a fixed
sentence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from copy import copy
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc

from services.common.provider_retry import RetryPlan, retryable_status
from services.common.providers import OPENAI
from services.common.retry_after import retry_after_s
from services.common.scrub import INTERNAL_ERROR, redact, redact_exception, scrub
from services.llm.provider import ROLE_ASSISTANT, ROLE_USER, ChatProvider, ProviderError

try:
    import openai
except ImportError as error:  # pragma: no cover - exercised only without the extra installed
    raise ImportError(
        "LLM_PROVIDER=openai needs the `openai` package: pip install 'infinitetalk-live[openai]'"
    ) from error

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_PERSONA = (
    "You are a friendly assistant speaking through a talking avatar. Answer in plain spoken sentences: short, warm "
    "and natural, without markdown, lists, code or emoji, since everything you write is read aloud."
)
MAX_RETRY_AFTER_S = 20.0  # a longer Retry-After is not waited for: the turn fails with the provider's sentence
MAX_BACKOFF_S = 8.0

__all__ = ["DEFAULT_MODEL", "DEFAULT_PERSONA", "OpenAIChat", "public_url", "retry_after_s", "scrub"]


def public_url(url: str) -> str:
    """The URL without user info, query or fragment (they may carry credentials), for messages and logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        return "(unparseable URL)"


class _Malformed(Exception):
    """A stream chunk that is not a chat.completion.chunk."""


class OpenAIChat(ChatProvider):
    """Streams replies from an OpenAI-compatible `/chat/completions` endpoint (see the module docstring)."""

    name = OPENAI

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        model: str = DEFAULT_MODEL,
        timeout_s: float = 30.0,
        stall_timeout_s: float = 10.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.5,
        client: openai.AsyncOpenAI | None = None,
    ) -> None:
        self.model = model
        self.timeout_s = timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.retry = RetryPlan(
            attempts=max(0, max_retries) + 1,
            backoff_s=backoff_base_s,
            max_backoff_s=MAX_BACKOFF_S,
            max_wait_s=MAX_RETRY_AFTER_S,
        )
        self._api_key = api_key
        # The SDK's own timeout is only a backstop behind our asyncio deadlines.
        self._client = client or openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url or None,
            max_retries=0,
            timeout=max(timeout_s, stall_timeout_s) + 5.0,
        )
        self.base_url = public_url(str(self._client.base_url)).rstrip("/")
        self._owns_client = client is None

    def __repr__(self) -> str:  # never the key
        return f"OpenAIChat(base_url={self.base_url!r}, model={self.model!r})"

    def secrets(self) -> tuple[str, ...]:
        return (self._api_key,)

    def for_model(self, model: str) -> ChatProvider:
        if not model or model == self.model:
            return self
        view = copy(self)
        view.model = model
        view._owns_client = False
        return view

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.close()

    # -- the reply --------------------------------------------------------------------------------------------------
    async def stream_reply(self, history: Sequence[tuple[str, str]], persona: str) -> AsyncIterator[str]:
        messages = [{"role": "system", "content": persona or DEFAULT_PERSONA}]
        messages += [
            {"role": role if role in (ROLE_USER, ROLE_ASSISTANT) else ROLE_USER, "content": text}
            for role, text in history
        ]
        stream = None
        try:
            stream, chunks, first = await self._open(messages)
            if first is None:
                return
            yield first
            while True:
                try:
                    piece = await self._next_piece(chunks, first_token=False)
                except openai.OpenAIError as error:  # mid-reply: never retried, the client already has the start
                    raise self._translate(error) from None
                if piece is None:
                    return
                yield piece
        finally:
            if stream is not None:
                await self._close(stream)

    async def _open(self, messages: list[dict[str, str]]) -> tuple[Any, AsyncIterator[Any], str | None]:
        """Sends the request and reads up to the first piece of text, retrying what may be retried meanwhile."""
        attempt = 0
        while True:
            stream = None
            try:
                try:
                    async with asyncio.timeout(self.timeout_s):
                        stream = await self._client.chat.completions.create(
                            model=self.model, messages=messages, stream=True
                        )
                except TimeoutError:
                    raise self._deadline("answer", self.timeout_s) from None
                chunks = stream  # its __anext__ reads the SDK's own chunk generator directly
                first = await self._next_piece(chunks, first_token=True)
                return stream, chunks, first
            except BaseException as error:
                if stream is not None:
                    await self._close(stream)
                delay, final = self._retry_plan(error, attempt)
                if delay is None:
                    raise final from None
                attempt += 1
                log.warning(
                    "LLM provider request failed; retrying",
                    extra={"attempt": attempt, "delay_s": round(delay, 3), "reason": final.message},
                )
                await asyncio.sleep(delay)

    async def _next_piece(self, chunks: AsyncIterator[Any], *, first_token: bool) -> str | None:
        """The next non-empty piece of reply text, or None at the end of the reply."""
        limit = self.timeout_s if first_token else self.stall_timeout_s
        while True:
            try:
                async with asyncio.timeout(limit):
                    chunk = await anext(chunks, None)
            except TimeoutError:
                raise self._deadline("answer" if first_token else "continue", limit) from None
            except ValueError as error:  # the SDK's json.loads of the chunk's data
                raise self._malformed(error) from None
            if chunk is None:
                return None
            try:
                piece = self._content(chunk)
            except _Malformed as error:
                raise self._malformed(error) from None
            if piece:
                return piece

    @staticmethod
    def _content(chunk: Any) -> str | None:
        try:
            choices = chunk.choices
            if not choices:  # usage-only or filter-results chunks
                return None
            content = choices[0].delta.content if choices[0].delta is not None else None
        except (AttributeError, TypeError, IndexError, KeyError) as error:
            raise _Malformed(type(error).__name__) from None
        if content is not None and not isinstance(content, str):
            raise _Malformed("content is not a string")
        return content

    async def _close(self, stream: Any) -> None:
        """Closes the HTTP response now: the connection drops, so the server stops generating."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await stream.close()

    # -- errors -----------------------------------------------------------------------------------------------------
    def _retry_plan(self, error: BaseException, attempt: int) -> tuple[float | None, ProviderError]:
        """(delay before the next attempt or None for no retry, the error to raise when not retrying)."""
        if isinstance(error, ProviderError):
            return None, error
        if not isinstance(error, Exception):  # CancelledError and friends
            raise error
        final = self._translate(error)
        retryable = isinstance(error, openai.APIConnectionError) and not isinstance(error, openai.APITimeoutError)
        server_wait = None
        if isinstance(error, openai.APIStatusError):
            status = error.status_code
            retryable = retryable_status(status) and getattr(error, "code", None) != "insufficient_quota"
            server_wait = retry_after_s(getattr(error.response, "headers", None))
        delay = self.retry.delay(attempt + 1, retryable, server_wait)
        if delay is None and retryable and attempt:
            final = ProviderError(final.code, f"{final.message} (gave up after {attempt + 1} attempts)")
        return delay, final

    def _provider_message(self, error: BaseException) -> str:
        """What the provider said, as it said it (unscrubbed: `redact` it for logs, `scrub` it for clients)."""
        message = getattr(error, "message", None) or str(error)
        body = getattr(error, "body", None)
        if isinstance(body, dict):
            inner = body.get("error") if isinstance(body.get("error"), dict) else body
            if isinstance(inner.get("message"), str):
                message = inner["message"]
        return str(message)

    def _translate(self, error: Exception) -> ProviderError:
        """The client's error for a failed provider call: a code and a sentence without the provider's address or
        any credential. The address and the full detail go to the log."""
        code = grpc.StatusCode
        detail = {"base_url": self.base_url, "model": self.model, "error": redact(repr(error), self._api_key)}
        if isinstance(error, openai.APITimeoutError):
            log.warning("LLM provider timed out", extra=detail)
            return ProviderError(code.DEADLINE_EXCEEDED, "the LLM provider timed out")
        if isinstance(error, openai.APIConnectionError):
            cause = error.__cause__ or error.__context__
            log.warning("LLM provider unreachable", extra=detail | {"cause": redact(repr(cause), self._api_key)})
            return ProviderError(code.UNAVAILABLE, "could not reach the LLM provider")
        if isinstance(error, openai.APIStatusError):
            status = error.status_code
            raw = self._provider_message(error)
            log.warning(
                "LLM provider answered an error",
                extra=detail | {"status": status, "provider_message": redact(raw, self._api_key)},
            )
            said = scrub(raw, self._api_key)
            if status == 401:
                return ProviderError(code.UNAUTHENTICATED, "the LLM provider rejected the API key (401)")
            if status == 403:
                return ProviderError(code.PERMISSION_DENIED, f"the LLM provider refused access (403): {said}")
            if status == 404:
                return ProviderError(
                    code.NOT_FOUND, f"the LLM provider does not know model {self.model!r} or this URL (404): {said}"
                )
            if status in (400, 413, 422):
                return ProviderError(code.INVALID_ARGUMENT, f"the LLM provider refused the request ({status}): {said}")
            if status == 429:
                return ProviderError(code.RESOURCE_EXHAUSTED, f"the LLM provider is rate limiting us (429): {said}")
            if status >= 500:
                return ProviderError(code.UNAVAILABLE, f"the LLM provider failed ({status}): {said}")
            return ProviderError(code.UNKNOWN, f"the LLM provider answered {status}: {said}")
        if isinstance(error, openai.APIError):  # an error event inside the stream
            raw = self._provider_message(error)
            log.warning(
                "LLM provider reported an error", extra=detail | {"provider_message": redact(raw, self._api_key)}
            )
            return ProviderError(code.UNKNOWN, f"the LLM provider reported an error: {scrub(raw, self._api_key)}")
        log.error("unexpected LLM provider failure", extra=detail | {"error": redact_exception(error, self._api_key)})
        return ProviderError(code.INTERNAL, f"the LLM provider call failed: {INTERNAL_ERROR}")

    def _deadline(self, what: str, seconds: float) -> ProviderError:
        phase = "start its reply" if what == "answer" else "send more of its reply"
        return ProviderError(
            grpc.StatusCode.DEADLINE_EXCEEDED, f"the LLM provider did not {phase} within {seconds:g} s"
        )

    def _malformed(self, error: BaseException) -> ProviderError:
        log.warning("malformed stream chunk", extra={"error": redact(repr(error), self._api_key)})
        return ProviderError(grpc.StatusCode.INTERNAL, "the LLM provider sent a malformed stream chunk")
