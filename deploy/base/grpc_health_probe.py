"""The kubelet's probe of a service whose gRPC port wants TLS (the kubelet's own gRPC probe speaks plaintext
only): asks grpc.health.v1 for the server's overall status on 127.0.0.1:$RECSYS_PORT and exits 0 when it
is SERVING, 1 otherwise, with one line saying why.

With RECSYS_TLS_DIR set it connects as the suite's peers do: the pod's own certificate (mTLS), the CA beside
it, and the certificate's first DNS name as the name to check, since the server's certificate names its
Service, never 127.0.0.1. Without it, plaintext.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import grpc
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.tls import TLSError, TLSFiles, channel_credentials

# Below the probes' timeoutSeconds, so a slow answer is this script's failure, not a killed process.
DEADLINE_S = 3.0


def own_server_name(certificate_pem: bytes) -> str:
    """The first DNS name of the leaf certificate: the name this pod's peers check when they call it."""
    leaf = x509.load_pem_x509_certificates(certificate_pem)[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns_names = names.get_values_for_type(x509.DNSName)
    if not dns_names:
        raise TLSError("the certificate names no DNS name to check the server against")
    return str(dns_names[0])


def open_channel(target: str, tls_dir: str) -> grpc.Channel:
    if not tls_dir:
        return grpc.insecure_channel(target)
    material = TLSFiles.in_directory(Path(tls_dir)).load()
    override = ("grpc.ssl_target_name_override", own_server_name(material.cert))
    return grpc.secure_channel(target, channel_credentials(material), options=[override])


def problem(env: Mapping[str, str]) -> str | None:
    """None when the server reports SERVING; otherwise what is wrong."""
    target = f"127.0.0.1:{env.get('RECSYS_PORT', '50051')}"
    try:
        channel = open_channel(target, env.get("RECSYS_TLS_DIR", ""))
    except (ValueError, x509.ExtensionNotFound) as error:  # TLSError is a ValueError
        return f"cannot use the TLS files: {error}"
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE_S)
        except grpc.RpcError as error:
            return f"{target}: {error.code().name}: {error.details()}"
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return f"{target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
    return None


def main(env: Mapping[str, str]) -> int:
    found = problem(env)
    if found is not None:
        print(found, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(os.environ))
