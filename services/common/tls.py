"""Transport security for every hop: TLS on a server's port, mTLS between the suite's own processes, and
certificates picked up again when their files change (cert-manager rotates them in place).

A process's identity is three PEM files: its certificate chain, its private key, and the CA that signs
its peers. They come from RECSYS_TLS_DIR (a directory laid out like a cert-manager Secret: tls.crt,
tls.key, ca.crt) or from RECSYS_TLS_CERT / RECSYS_TLS_KEY / RECSYS_TLS_CA. RECSYS_TLS_SERVER says how
the process's own port is served: `mtls` (peers must show a certificate from the CA: every internal
service), `tls` (server certificate only: the public gateway, whose callers show tokens instead) or `off`.
Whenever files are configured, every outgoing channel presents the certificate (mTLS to the next hop).
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.common.settings import ENV_PREFIX, EnvReader
from services.common.watched import RECHECK_S, Watched

log = logging.getLogger(__name__)

SERVER_MODES = ("off", "tls", "mtls")
# The file names of a kubernetes.io/tls Secret written by cert-manager (ca.crt included).
CERT_FILE, KEY_FILE, CA_FILE = "tls.crt", "tls.key", "ca.crt"


class TLSError(ValueError):
    """The certificate files are missing, unreadable, or do not belong together."""


@dataclass(frozen=True)
class TLSMaterial:
    """The PEM bytes of one identity, checked to belong together."""

    cert: bytes
    key: bytes
    ca: bytes
    not_after: datetime.datetime


@dataclass(frozen=True)
class TLSFiles:
    cert: Path
    key: Path
    ca: Path

    @classmethod
    def in_directory(cls, directory: Path) -> TLSFiles:
        return cls(directory / CERT_FILE, directory / KEY_FILE, directory / CA_FILE)

    @property
    def paths(self) -> tuple[Path, Path, Path]:
        return (self.cert, self.key, self.ca)

    def load(self) -> TLSMaterial:
        """Read and check the three files: each parses, and the key is the certificate's key."""
        try:
            cert, key, ca = self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes()
        except OSError as error:
            raise TLSError(f"cannot read {error.filename}: {error.strerror}") from None
        try:
            chain = x509.load_pem_x509_certificates(cert)
            x509.load_pem_x509_certificates(ca)
            private_key = serialization.load_pem_private_key(key, password=None)
        except ValueError as error:
            raise TLSError(f"{self.cert}, {self.key} or {self.ca} is not valid PEM: {error}") from None
        leaf = chain[0]
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        if private_key.public_key().public_bytes(serialization.Encoding.DER, public) != leaf.public_key().public_bytes(
            serialization.Encoding.DER, public
        ):
            raise TLSError(f"{self.key} is not the private key of the certificate in {self.cert}")
        return TLSMaterial(cert, key, ca, leaf.not_valid_after_utc)


@dataclass(frozen=True)
class TLSSettings:
    files: TLSFiles | None
    server_mode: str

    @property
    def enabled(self) -> bool:
        return self.files is not None

    @classmethod
    def read(cls, env: EnvReader) -> TLSSettings:
        directory = env.string("TLS_DIR", "")
        named = [env.string(key, "") for key in ("TLS_CERT", "TLS_KEY", "TLS_CA")]
        files: TLSFiles | None = None
        if directory and any(named):
            env.problems.append(f"{ENV_PREFIX}TLS_DIR and {ENV_PREFIX}TLS_CERT/KEY/CA are exclusive: set one")
        elif directory:
            files = TLSFiles.in_directory(Path(directory))
        elif all(named):
            files = TLSFiles(*(Path(name) for name in named))
        elif any(named):
            env.problems.append(f"{ENV_PREFIX}TLS_CERT, {ENV_PREFIX}TLS_KEY and {ENV_PREFIX}TLS_CA go together")
        mode = env.choice("TLS_SERVER", "mtls" if files else "off", SERVER_MODES)
        if mode != "off" and files is None:
            env.problems.append(f"{ENV_PREFIX}TLS_SERVER={mode} needs {ENV_PREFIX}TLS_DIR or TLS_CERT/KEY/CA")
        if files is not None:
            try:
                files.load()
            except TLSError as error:
                env.problems.append(f"TLS: {error}")
        return cls(files, mode)


def _server_config(material: TLSMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(material.key, material.cert)], root_certificates=material.ca)


class _ServerCertificates:
    """The fetcher grpc calls before each handshake: new files are loaded when they change (a handshake
    looks at most once per RECHECK_S); files that fail to load keep the previous certificate serving."""

    def __init__(self, files: TLSFiles, clock: Callable[[], float] = time.monotonic) -> None:
        self.files = files
        self._material = Watched(files.paths, files.load, (TLSError,), recheck_s=RECHECK_S, clock=clock)
        self.initial = self._material.value

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        if not self._material.refresh():
            return None  # grpc keeps the configuration it has
        material = self._material.value
        log.info(
            "server certificate reloaded", extra={"cert": str(self.files.cert), "not_after": str(material.not_after)}
        )
        return _server_config(material)


def server_credentials(settings: TLSSettings) -> grpc.ServerCredentials | None:
    """None for a plaintext port."""
    if settings.server_mode == "off" or settings.files is None:
        return None
    certificates = _ServerCertificates(settings.files)
    return grpc.dynamic_ssl_server_credentials(
        _server_config(certificates.initial),
        certificates,
        require_client_authentication=settings.server_mode == "mtls",
    )


def channel_credentials(material: TLSMaterial) -> grpc.ChannelCredentials:
    """Trust the CA and present our certificate (the server decides whether it asks for it)."""
    return grpc.ssl_channel_credentials(
        root_certificates=material.ca, private_key=material.key, certificate_chain=material.cert
    )


class ClientCertificates:
    """An outgoing side's view of its files: the current credentials, and whether they changed since the
    channels were opened (grpc keeps a channel's credentials for its lifetime, so channels are reopened)."""

    def __init__(self, files: TLSFiles) -> None:
        self.files = files
        # Looked at whenever asked: the caller polls at its own pace.
        self._material = Watched(files.paths, files.load, (TLSError,), recheck_s=0.0)

    @property
    def material(self) -> TLSMaterial:
        return self._material.value

    def credentials(self) -> grpc.ChannelCredentials:
        return channel_credentials(self.material)

    def reload_if_changed(self) -> bool:
        """True when new files were loaded; files that fail to load leave the current ones in use."""
        return self._material.refresh()


def write_private(path: Path, data: bytes) -> None:
    """Key material: created 0600, replaced atomically (a reader never sees half a key)."""
    tmp = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
