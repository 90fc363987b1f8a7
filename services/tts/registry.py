"""Which engines a process runs, chosen by TTS_ENGINE, loaded (and warmed up) once at start-up."""

from __future__ import annotations

import logging

from services.common.config import ConfigError
from services.tts.engine import SpeechEngine

log = logging.getLogger(__name__)

ENGINE_CHOICES = ("piper", "espeak")


def load_engines(choice: str = "piper") -> list[SpeechEngine]:
    """The engines to serve, primary first (its first voice is the default voice).

    "piper": Piper, plus espeak-ng as a second choice of voice; if Piper cannot be loaded, a warning and espeak-ng
    alone. "espeak": espeak-ng alone (no model in memory). Blocking: call it before reporting SERVING."""
    if choice not in ENGINE_CHOICES:
        raise ConfigError(f"TTS_ENGINE={choice!r} is not one of: {', '.join(ENGINE_CHOICES)}")
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
