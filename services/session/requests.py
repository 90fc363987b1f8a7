"""What a CreateSession request may ask for: sizes and names first (no await needed), then its choices against the
catalog and the caller's grants. Pure: the service turns a refusal into the gRPC status."""

from __future__ import annotations

from dataclasses import dataclass

from infinitetalk_live_client.avatar.v1 import session_pb2
from services.common.media import MAX_PORTRAIT_BYTES
from services.common.providers import LLM_PROVIDERS as KNOWN_LLM_PROVIDERS
from services.session.access import Caller, check_grants

NAME_LIMIT = 64
PERSONA_LIMIT = 4000
LLM_PROVIDERS = {"", *KNOWN_LLM_PROVIDERS}  # "": the llm service's default


@dataclass(frozen=True)
class InvalidField(Exception):
    """INVALID_ARGUMENT on `field`: `message` says what to change; `reason` is a stable code for programs."""

    field: str
    message: str
    reason: str = ""


def check_sizes(request: session_pb2.CreateSessionRequest) -> None:
    options = request.options
    if len(request.avatar) > NAME_LIMIT or len(request.voice) > NAME_LIMIT:
        raise InvalidField("avatar", f"avatar and voice names are at most {NAME_LIMIT} characters")
    if options.llm_provider not in LLM_PROVIDERS:
        raise InvalidField(
            "options.llm_provider",
            f"unknown LLM provider {options.llm_provider!r}; choose one of {sorted(LLM_PROVIDERS - {''})}",
        )
    if len(options.llm_model) > NAME_LIMIT * 2:
        raise InvalidField("options.llm_model", f"llm_model is at most {NAME_LIMIT * 2} characters")
    if len(options.persona) > PERSONA_LIMIT:
        raise InvalidField("options.persona", f"persona is at most {PERSONA_LIMIT} characters")
    if request.portrait and request.avatar:
        raise InvalidField("portrait", "set either avatar or portrait, not both: the portrait becomes the avatar")
    if len(request.portrait) > MAX_PORTRAIT_BYTES:
        raise InvalidField(
            "portrait",
            f"the portrait is {len(request.portrait) / 2**20:.1f} MiB; the limit is "
            f"{MAX_PORTRAIT_BYTES / 2**20:.0f} MiB",
            reason="too_large",
        )


def check_choices(
    request: session_pb2.CreateSessionRequest, caller: Caller, catalog: session_pb2.GetCatalogResponse
) -> tuple[str, str]:
    """(avatar, voice) the session will use (avatar "" for a portrait); Refusal when the caller's key lacks a
    grant, InvalidField for a name the server does not offer."""
    check_grants(
        caller,
        offline=request.options.pacing == session_pb2.PACING_OFFLINE,
        llm_choice=bool(request.options.llm_provider or request.options.llm_model),
        voice_choice=request.voice not in ("", catalog.default_voice),
    )
    avatar = ""
    if not request.portrait:
        avatar = request.avatar or catalog.default_avatar
        avatars = [a.name for a in catalog.avatars]
        if avatar not in avatars:
            raise InvalidField("avatar", f"unknown avatar {avatar!r}; choose one of {avatars}")
    voice = request.voice or catalog.default_voice
    voices = [v.name for v in catalog.voices]
    if voice not in voices:
        raise InvalidField("voice", f"unknown voice {voice!r}; choose one of {voices}")
    return avatar, voice
