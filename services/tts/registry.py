"""Which engines a process runs, chosen by TTS_PROVIDER (or its older name TTS_ENGINE), loaded (and warmed up) once
at start-up. Cloud providers come first when chosen; the offline engines are always loaded behind them, as other
voices and as the fallback that finishes an utterance when a provider fails mid-way (TTS_FALLBACK)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.common.config import ConfigError
from services.tts.engine import SpeechEngine

log = logging.getLogger(__name__)

ENGINE_CHOICES = ("piper", "espeak")
PROVIDER_CHOICES = (*ENGINE_CHOICES, "elevenlabs", "openai")
FALLBACK_CHOICES = ("piper", "espeak", "none")
_FALLBACK_VOICES = {"piper": "joe", "espeak": "espeak-en-us"}


def load_engines(choice: str = "piper") -> list[SpeechEngine]:
    """The engines to serve, primary first (its first voice is the default voice).

    "piper": Piper, plus espeak-ng as a second choice of voice; if Piper cannot be loaded, a warning and espeak-ng
    alone. "espeak": espeak-ng alone (no model in memory). Blocking: call it before reporting SERVING."""
    if choice not in ENGINE_CHOICES:
        raise ConfigError(f"TTS_ENGINE={choice!r} is not one of: {', '.join(ENGINE_CHOICES)} (offline engines)")
    engines: list[SpeechEngine] = []
    if choice == "piper":
        try:
            from services.tts.piper import PiperEngine

            piper = PiperEngine()
            piper.warm_up()
            engines.append(piper)
        except Exception:
            log.warning("Piper could not be loaded; falling back to espeak-ng", exc_info=True)
    try:
        from services.tts.espeak import EspeakEngine

        espeak = EspeakEngine()
        espeak.warm_up()
        engines.append(espeak)
    except Exception:
        if not engines:
            raise
        log.warning("espeak-ng could not be loaded; serving Piper voices only", exc_info=True)
    log.info("speech engines loaded", extra={"engines": ",".join(e.name for e in engines)})
    return engines


@dataclass(frozen=True)
class TtsSetup:
    """What the tts process serves: its engines (primary first) and the fallback voice (None: none)."""

    engines: list[SpeechEngine]
    fallback_voice: str | None


def _policy(env: Mapping[str, str]):
    from services.tts.remote import RetryPolicy

    def number(name: str, default: float) -> float:
        raw = env.get(name) or ""
        try:
            return float(raw) if raw else default
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number") from None

    return RetryPolicy(
        first_byte_timeout_s=number("TTS_FIRST_BYTE_TIMEOUT_S", 10.0),
        stall_timeout_s=number("TTS_STALL_TIMEOUT_S", 10.0),
        attempts=1 + max(0, int(number("TTS_RETRIES", 2))),
    )


def _elevenlabs(env: Mapping[str, str]) -> SpeechEngine:
    from services.tts.elevenlabs import DEFAULT_MODEL_ID, DEFAULT_VOICE_ID, ElevenLabsEngine

    key = env.get("ELEVENLABS_API_KEY") or ""
    base_url = env.get("ELEVENLABS_BASE_URL") or None
    if not key and not base_url:
        raise ConfigError("TTS_PROVIDER=elevenlabs needs ELEVENLABS_API_KEY (or ELEVENLABS_BASE_URL: a local server)")
    extra = [v.strip() for v in (env.get("ELEVENLABS_VOICES") or "").split(",") if v.strip()]
    return ElevenLabsEngine(
        key or "unused",
        base_url=base_url,
        voice_id=env.get("ELEVENLABS_VOICE_ID") or DEFAULT_VOICE_ID,
        model_id=env.get("ELEVENLABS_MODEL_ID") or DEFAULT_MODEL_ID,
        extra_voice_ids=extra,
        policy=_policy(env),
    )


def _openai(env: Mapping[str, str]) -> SpeechEngine:
    from services.tts.openai_tts import DEFAULT_MODEL, DEFAULT_VOICE, OpenAITtsEngine

    key = env.get("OPENAI_API_KEY") or ""
    # OPENAI_TTS_BASE_URL lets speech go elsewhere than the LLM (e.g. LLM on vLLM, voice on OpenAI).
    base_url = env.get("OPENAI_TTS_BASE_URL") or env.get("OPENAI_BASE_URL") or None
    if not key and not base_url:
        raise ConfigError(
            "TTS_PROVIDER=openai needs OPENAI_API_KEY (or OPENAI_TTS_BASE_URL / OPENAI_BASE_URL for a local server)"
        )
    return OpenAITtsEngine(
        key or "unused",
        base_url=base_url,
        model=env.get("OPENAI_TTS_MODEL") or DEFAULT_MODEL,
        default_voice=env.get("OPENAI_TTS_VOICE") or DEFAULT_VOICE,
        policy=_policy(env),
    )


_CLOUD = {"elevenlabs": (_elevenlabs, "ELEVENLABS_API_KEY"), "openai": (_openai, "OPENAI_API_KEY")}


def load_setup(env: Mapping[str, str] | None = None) -> TtsSetup:
    """The engines and fallback voice from the environment (see the module docstring). A cloud provider whose key
    is set but which is not the chosen one is loaded too (its voices become choosable per session), unless its SDK
    is missing. Blocking: call it before reporting SERVING."""
    env = os.environ if env is None else env
    choice = (env.get("TTS_PROVIDER") or env.get("TTS_ENGINE") or "piper").strip().lower()
    if choice not in PROVIDER_CHOICES:
        raise ConfigError(f"TTS_PROVIDER={choice!r} is not one of: {', '.join(PROVIDER_CHOICES)}")
    fallback = (env.get("TTS_FALLBACK") or "piper").strip().lower()
    if fallback not in FALLBACK_CHOICES:
        raise ConfigError(f"TTS_FALLBACK={fallback!r} is not one of: {', '.join(FALLBACK_CHOICES)}")
    engines: list[SpeechEngine] = []
    if choice in _CLOUD:
        engines.append(_CLOUD[choice][0](env))
    offline = load_engines("espeak" if choice == "espeak" else "piper")
    engines.extend(offline)
    for name, (factory, key_var) in _CLOUD.items():
        if name != choice and env.get(key_var):
            try:
                engines.append(factory(env))
            except ImportError as error:
                log.warning("%s voices not offered: %s", name, error)
    names = {info.name for engine in offline for info in engine.voices()}
    voice = _FALLBACK_VOICES.get(fallback)
    if voice is not None and voice not in names:
        voice = next((v for v in _FALLBACK_VOICES.values() if v in names), None)
    return TtsSetup(engines, voice)
