"""Which environment variables each process of the local stack may see: an allow-list per process.

Why: the supervisor used to hand every process, Envoy included, its own whole environment. The provider keys
(OPENAI_API_KEY, ELEVENLABS_API_KEY) and the session service's API keys (SESSION_API_KEYS) then sat in the memory and
in /proc/<pid>/environ of processes that never use them, where a bug, a crash dump or a debug endpoint could show
them. Now each process gets a base that any program needs (PATH, HOME, locale, time zone, temp dir), the Python
runtime's variables (services only), and the variables its own code reads: provider keys reach the llm and the tts
only, API keys the session service only, the viewer URLs' signing key the session and the packagers only, and Envoy
the base only.

A variable that no row allows reaches nobody. A service that starts reading a new variable either names it with its
own prefix (SESSION_*, LLM_*, TTS_*, VIDEO_*, PACKAGER_*) or adds it here; tests/test_security_env.py fails when a
name a service reads is missing. Pure: no I/O, so the table can be checked without starting anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

GATEWAY = "gateway"
SERVICES = ("session", "llm", "tts", "video", "packager")


@dataclass(frozen=True)
class Scope:
    """Variables by exact name and by prefix."""

    names: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    def allows(self, name: str) -> bool:
        return name in self.names or name.startswith(self.prefixes)


def _scope(names: str = "", prefixes: str = "") -> Scope:
    return Scope(frozenset(names.split()), tuple(prefixes.split()))


# Every process, Envoy included: what any program needs to run.
BASE = _scope("PATH HOME USER LOGNAME LANG LANGUAGE TZ TMPDIR TEMP TMP", "LC_")

# Every Python service: the interpreter, the virtualenv, logging and shutdown, native thread pools and caches, and
# coverage in subprocesses under test.
PYTHON = _scope(
    "VIRTUAL_ENV LD_LIBRARY_PATH XDG_CACHE_HOME HOST PORT METRICS_PORT SHUTDOWN_GRACE_S LOG_LEVEL "
    "OMP_NUM_THREADS OPENBLAS_NUM_THREADS MKL_NUM_THREADS NUMEXPR_NUM_THREADS NUMEXPR_MAX_THREADS "
    "VECLIB_MAXIMUM_THREADS MALLOC_ARENA_MAX GLIBC_TUNABLES",
    "PYTHON NUMBA_ OMP_ KMP_ COVERAGE_ COV_CORE_",
)

# The processes that call out to the internet (cloud providers): proxies (which may carry credentials) and CAs.
OUTBOUND = _scope(
    "HTTP_PROXY HTTPS_PROXY ALL_PROXY NO_PROXY http_proxy https_proxy all_proxy no_proxy "
    "SSL_CERT_FILE SSL_CERT_DIR REQUESTS_CA_BUNDLE CURL_CA_BUNDLE"
)

# Each service's own variables (services/<name>/config.py, __main__.py and the modules they load).
OWN: dict[str, Scope] = {
    "session": _scope(
        "LLM_ADDR TTS_ADDR VIDEO_ADDR PACKAGER_ADDR PUBLIC_HLS_URL MAX_SESSIONS MAX_TEXT_CHARS "
        "MAX_WATCHERS_PER_SESSION REQUESTS_PER_SECOND REQUEST_BURST SEGMENT_DURATION_MS PART_DURATION_MS "
        "LOOKAHEAD_FRAMES VIDEO_WIDTH VIDEO_HEIGHT HLS_SIGNING_KEY",  # the signing key: session and packagers
        "SESSION_",  # SESSION_API_KEYS, SESSION_API_KEYS_FILE and every other SESSION_* setting
    ),
    "llm": _scope(prefixes="LLM_ OPENAI_"),  # OPENAI_API_KEY, OPENAI_BASE_URL, ...
    "tts": _scope(prefixes="TTS_ OPENAI_ ELEVENLABS_ PIPER_ ESPEAK ONNXRUNTIME_ ORT_"),
    "video": _scope(
        "FACE_MODEL_DIR INFINITETALK WORLD_SIZE RANK LOCAL_RANK LOCAL_WORLD_SIZE MASTER_ADDR MASTER_PORT "
        "HF_HOME HF_HUB_CACHE HF_HUB_OFFLINE HUGGINGFACE_HUB_CACHE TRANSFORMERS_CACHE TRANSFORMERS_OFFLINE "
        "MPLCONFIGDIR TF_CPP_MIN_LOG_LEVEL",
        "VIDEO_ INFINITETALK_ CUDA_ NVIDIA_ PYTORCH_ TORCH_ TORCHINDUCTOR_ TRITON_ NCCL_ GLOO_ GLOG_ OPENCV_ "
        "ONNXRUNTIME_ ORT_",
    ),
    "packager": _scope("HTTP_PORT", "PACKAGER_ HLS_"),
}

SCOPES: dict[str, tuple[Scope, ...]] = {
    GATEWAY: (BASE,),
    "session": (BASE, PYTHON, OWN["session"]),
    "llm": (BASE, PYTHON, OUTBOUND, OWN["llm"]),
    "tts": (BASE, PYTHON, OUTBOUND, OWN["tts"]),
    "video": (BASE, PYTHON, OWN["video"]),
    "packager": (BASE, PYTHON, OWN["packager"]),
}


def allowed(process: str, name: str) -> bool:
    """Whether `process` (a service's name, or GATEWAY) may see variable `name`. KeyError for an unknown process:
    a process nobody thought about gets nothing by accident."""
    return any(scope.allows(name) for scope in SCOPES[process])


def scoped_env(process: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The part of `environ` that `process` may see."""
    scopes = SCOPES[process]
    return {name: value for name, value in environ.items() if any(scope.allows(name) for scope in scopes)}
