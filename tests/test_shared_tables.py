"""The tables every service shares, each defined once in services/common: the default ports (services.common.ports)
and the LLM providers' names (services.common.providers). The code imports them; the Kubernetes manifests (YAML) keep
copies, checked here against the table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from infinitetalk_live_client.avatar.v1 import session_pb2
from services.common.ports import GATEWAY_PORT, GRPC_PORTS, METRICS_PORTS, PACKAGER_HTTP_PORT, SERVICES
from services.common.providers import DEFAULT_LLM_PROVIDER, LLM_PROVIDERS, OFFLINE, OPENAI

REPO = Path(__file__).resolve().parent.parent
K8S_BASE = REPO / "k8s" / "base"
PORTS = {*GRPC_PORTS.values(), *METRICS_PORTS.values(), PACKAGER_HTTP_PORT, GATEWAY_PORT}
PORT_IN_TEXT = re.compile(r":(\d{4,5})\b")
# The one Python module that spells the ports out.
SPELLED_OUT_ALLOWED = {"services/common/ports.py"}


def test_the_port_table_is_complete_and_distinct() -> None:
    assert set(GRPC_PORTS) == set(METRICS_PORTS) == set(SERVICES)
    ports = [*GRPC_PORTS.values(), *METRICS_PORTS.values(), PACKAGER_HTTP_PORT, GATEWAY_PORT]
    assert len(ports) == len(set(ports)), "two listeners of one host would share a port"


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def test_python_code_takes_ports_from_the_table() -> None:
    spelled_out = []
    for folder in ("services", "gateway", "infinitetalk_live"):
        for path in sorted((REPO / folder).rglob("*.py")):
            name = str(path.relative_to(REPO))
            if name in SPELLED_OUT_ALLOWED:
                continue
            tree = ast.parse(path.read_text("utf-8"))
            docstrings = _docstrings(tree)
            for node in ast.walk(tree):
                if not isinstance(node, ast.Constant) or id(node) in docstrings:
                    continue
                value = node.value
                if isinstance(value, int) and not isinstance(value, bool) and value in PORTS:
                    spelled_out.append(f"{name}:{node.lineno}: {value}")
                elif isinstance(value, str) and any(int(p) in PORTS for p in PORT_IN_TEXT.findall(value)):
                    spelled_out.append(f"{name}:{node.lineno}: {value!r}")
    assert not spelled_out, "import the port from services.common.ports:\n" + "\n".join(spelled_out)


def _manifests() -> dict[tuple[str, str], dict]:
    objects = {}
    for path in K8S_BASE.rglob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text("utf-8")):
            if isinstance(document, dict) and "kind" in document and "metadata" in document:
                objects[(document["kind"], document["metadata"]["name"])] = document
    return objects


def _container_ports(workload: dict) -> dict[str, int]:
    (container,) = [c for c in workload["spec"]["template"]["spec"]["containers"]]
    return {port["name"]: port["containerPort"] for port in container["ports"]}


def test_k8s_manifests_use_the_port_table() -> None:
    objects = _manifests()
    workloads = {name: obj for (kind, name), obj in objects.items() if kind in ("Deployment", "StatefulSet")}
    for service in SERVICES:
        ports = _container_ports(workloads[service])
        assert ports["grpc"] == GRPC_PORTS[service], service
        assert ports["metrics"] == METRICS_PORTS[service], service
        annotations = workloads[service]["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/port") == str(METRICS_PORTS[service]), service
    assert _container_ports(workloads["packager"])["http"] == PACKAGER_HTTP_PORT
    assert _container_ports(workloads["gateway"])["http"] == GATEWAY_PORT
    for (kind, name), obj in objects.items():
        if kind != "Service":
            continue
        service = "video" if name == "video-workers" else name
        for port in obj["spec"]["ports"]:
            if port["name"] == "grpc":
                assert port["port"] == GRPC_PORTS[service], name
            elif port["name"] == "metrics":
                assert port["port"] == METRICS_PORTS[service], name
            elif port["name"] == "http" and service == "packager":
                assert port["port"] == PACKAGER_HTTP_PORT


def test_k8s_peer_addresses_use_the_port_table() -> None:
    kustomization = yaml.safe_load((K8S_BASE / "kustomization.yaml").read_text("utf-8"))
    (session_env,) = [g for g in kustomization["configMapGenerator"] if g["name"] == "session-env"]
    settings = dict(literal.split("=", 1) for literal in session_env["literals"])
    for variable, service in (("LLM_ADDR", "llm"), ("TTS_ADDR", "tts"), ("VIDEO_ADDR", "video")):
        assert settings[variable].endswith(f":{GRPC_PORTS[service]}"), variable
    assert all(a.endswith(f":{GRPC_PORTS['packager']}") for a in settings["PACKAGER_ADDR"].split(","))


def test_the_services_and_the_supervisor_default_to_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    from infinitetalk_live.ports import StackPorts
    from services.llm import __main__ as llm_main
    from services.packager.config import PackagerConfig
    from services.packager.config import server_config as packager_server
    from services.session.config import server_config as session_server

    for variable in ("PORT", "METRICS_PORT", "HTTP_PORT"):
        monkeypatch.delenv(variable, raising=False)
    assert (session_server().port, session_server().metrics_port) == (GRPC_PORTS["session"], METRICS_PORTS["session"])
    assert (packager_server().port, packager_server().metrics_port) == (GRPC_PORTS["packager"], 9105)
    assert PackagerConfig().http_port == PACKAGER_HTTP_PORT
    assert (GRPC_PORTS["llm"], METRICS_PORTS["llm"]) == (llm_main.DEFAULT_PORT, llm_main.DEFAULT_METRICS_PORT)
    defaults = StackPorts.defaults()
    assert defaults.grpc == dict(GRPC_PORTS) and defaults.metrics == dict(METRICS_PORTS)
    assert defaults.http == PACKAGER_HTTP_PORT


def test_llm_provider_names_are_one_list() -> None:
    from services.llm.config import PROVIDERS, LlmConfig
    from services.llm.offline import OfflinePersona
    from services.llm.openai import OpenAIChat
    from services.session.requests import LLM_PROVIDERS as SESSION_CHOICES

    assert PROVIDERS == LLM_PROVIDERS == (OFFLINE, OPENAI)
    assert LlmConfig().provider == DEFAULT_LLM_PROVIDER in LLM_PROVIDERS
    assert (OfflinePersona.name, OpenAIChat.name) == (OFFLINE, OPENAI)
    assert {"", *LLM_PROVIDERS} == SESSION_CHOICES  # "": the llm service's default


@pytest.mark.parametrize(("provider", "accepted"), [(OFFLINE, True), (OPENAI, True), ("", True), ("gpt", False)])
def test_a_session_may_name_exactly_the_llm_services_providers(provider: str, accepted: bool) -> None:
    from services.session.requests import InvalidField, check_sizes

    request = session_pb2.CreateSessionRequest(options=session_pb2.SessionOptions(llm_provider=provider))
    if accepted:
        check_sizes(request)
    else:
        with pytest.raises(InvalidField, match="unknown LLM provider"):
            check_sizes(request)


def test_the_docs_and_manifests_name_only_ports_of_the_table() -> None:
    """A port in the services' ranges (5005x gRPC, 910x metrics) that the docs or the manifests name is one of the
    table's, and `<service>:<port>` names that service's port."""
    grpc_by_host = {**GRPC_PORTS, "video-workers": GRPC_PORTS["video"]}
    texts = [REPO / "README.md", REPO / "k8s" / "README.md", *sorted((REPO / "k8s").rglob("*.yaml"))]
    for path in texts:
        text = path.read_text("utf-8")
        for match in re.finditer(r"\b(5005\d|910\d)\b", text):
            assert int(match.group(1)) in PORTS, f"{path.relative_to(REPO)}: {match.group(0)} is not in the table"
        for host, port in re.findall(r"\b([a-z][a-z-]*)(?:-\d+\.packager|-<i>\.packager)?:(5005\d)\b", text):
            if host in grpc_by_host:
                assert int(port) == grpc_by_host[host], f"{path.relative_to(REPO)}: {host}:{port}"
