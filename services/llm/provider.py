"""The seam between the llm service and whatever writes the replies (the offline persona, an OpenAI-compatible
API): a provider turns a conversation into a stream of text deltas and nothing else; clause splitting, cancellation,
limits and memory are the service's job."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence

import grpc

ROLE_USER = "user"
ROLE_ASSISTANT = "assistant"


class ProviderError(Exception):
    """A failure a provider can name (quota, unreachable backend, refused input); ends one turn, not the stream.

    Its message goes to the client (scrubbed once more by the service): name no address and no credential. Anything
    else a provider raises reaches the caller as INTERNAL with a fixed sentence, its detail in the log only.
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ChatProvider(ABC):
    """Writes the assistant's next reply, streamed."""

    name: str = "provider"

    @abstractmethod
    def stream_reply(self, history: Sequence[tuple[str, str]], persona: str) -> AsyncIterator[str]:
        """Yields the reply to the conversation as text deltas (any size, whitespace included as it comes).

        `history` is (role, text) pairs, oldest first, roles ROLE_USER / ROLE_ASSISTANT, ending with the user turn to
        answer; an assistant entry may be a reply that was cut off. `persona` is the system prompt ("" selects the
        provider's default). Implement as an async generator: the service stops a reply by closing the iterator
        (`aclose()`, or cancelling the task that iterates it), so release connections in `finally`. Raise
        ProviderError for failures a caller should see with a specific code.
        """

    def for_model(self, model: str) -> ChatProvider:
        """This provider writing with `model` (a per-session choice); providers without models ignore it."""
        return self

    def secrets(self) -> tuple[str, ...]:
        """Credentials this provider holds (an API key), so the service can keep them out of what it logs."""
        return ()

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing
        """Releases shared resources (HTTP sessions) at shutdown."""
