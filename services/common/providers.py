"""The LLM providers by name: what LLM_PROVIDER and a session's `options.llm_provider` may say.

Why here: the llm service builds the providers and the session service checks a CreateSession's choice before any
stream opens; both read this one tuple, so a provider added to the llm service is one a session may ask for (and the
session service cannot accept a name the llm service would refuse mid-session)."""

from __future__ import annotations

from typing import Final

OFFLINE: Final = "offline"  # services.llm.offline: the built-in persona, no network
OPENAI: Final = "openai"  # services.llm.openai: any OpenAI-compatible server
LLM_PROVIDERS: Final[tuple[str, ...]] = (OFFLINE, OPENAI)
DEFAULT_LLM_PROVIDER: Final = OFFLINE
