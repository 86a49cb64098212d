"""The tritonserver binary shipped in the nvidia-pytriton wheel, run on CPU for one machine.

It needs: a backends directory holding the python backend and the stub built for this interpreter's
version; this interpreter's lib directory first on LD_LIBRARY_PATH (else the stub loads another
libpython) plus the wheel's bundled libraries; and this environment's bin first on PATH, so the stub's
embedded Python resolves this virtual environment's site-packages (numpy<2, the recsys package).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytriton

from services.common.tls import TLSFiles
from services.launcher.environment import suite_environment

DIST = Path(pytriton.__file__).resolve().parent / "tritonserver"
LIBS = Path(pytriton.__file__).resolve().parent.parent / "nvidia_pytriton.libs"


class TritonError(RuntimeError):
    """tritonserver did not come up; the message carries the tail of its log."""


def prepare_backends(workspace: Path) -> Path:
    """backends/python with the python backend and the stub for this interpreter (what the wheel ships)."""
    backend = workspace / "backends" / "python"
    backend.mkdir(parents=True)
    for source in (DIST / "backends" / "python").iterdir():
        if source.is_file():
            shutil.copy2(source, backend / source.name)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = DIST / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonError(f"the nvidia-pytriton wheel has no python backend stub for Python {version}")
    shutil.copy2(stub, backend / stub.name)
    return workspace / "backends"


def server_environment() -> dict[str, str]:
    env = suite_environment(os.environ)
    libs = [sysconfig.get_config_var("LIBDIR") or "", str(LIBS), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = ":".join(p for p in libs if p)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


@dataclass
class TritonServer:
    repository: Path
    grpc_port: int
    log_path: Path
    # A deployment configuration (triton/<model>/configs/<name>.pbtxt) instead of config.pbtxt.
    config_name: str | None = None
    # Models loaded at start (explicit model control); the rest of the repository loads on request.
    models: list[str] = field(default_factory=lambda: ["*"])
    # Serve gRPC over mTLS with these files: callers must show a certificate from the same CA.
    tls: TLSFiles | None = None
    shm_prefix: str = field(default_factory=lambda: f"recsys-{uuid.uuid4().hex[:8]}-")
    process: subprocess.Popen[bytes] | None = None
    _workspace: Path | None = None
    _log: IO[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, preexec_fn: Callable[[], object] | None = None) -> None:
        self._workspace = Path(tempfile.mkdtemp(prefix="recsys-triton-"))
        backends = prepare_backends(self._workspace)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        command = [
            str(DIST / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--cache-directory={self._workspace / 'caches'}",
            f"--grpc-port={self.grpc_port}",
            "--grpc-address=127.0.0.1",
            "--allow-http=false",
            "--allow-metrics=false",
            "--model-control-mode=explicit",
            *(f"--load-model={model}" for model in self.models),
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            "--exit-timeout-secs=10",
            "--log-verbose=0",
        ]
        if self.config_name:
            command.append(f"--model-config-name={self.config_name}")
        if self.tls is not None:
            command += [
                "--grpc-use-ssl=true",
                "--grpc-use-ssl-mutual=true",
                f"--grpc-server-cert={self.tls.cert}",
                f"--grpc-server-key={self.tls.key}",
                f"--grpc-root-cert={self.tls.ca}",
            ]
        self.process = subprocess.Popen(
            command,
            env=server_environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec_fn,
        )

    def wait_ready(self, models: list[str], timeout_s: float, client_tls: TLSFiles | None = None) -> None:
        """Until the server and `models` are ready; over mTLS with client_tls when the server wants it."""
        import tritonclient.grpc as triton_grpc

        deadline = time.monotonic() + timeout_s
        if client_tls is None:
            client = triton_grpc.InferenceServerClient(self.address)
        else:
            client = triton_grpc.InferenceServerClient(
                self.address,
                ssl=True,
                root_certificates=str(client_tls.ca),
                private_key=str(client_tls.key),
                certificate_chain=str(client_tls.cert),
            )
        try:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise TritonError(f"tritonserver exited with {self.process.returncode}: {self.log_tail()}")
                try:
                    if client.is_server_ready() and all(client.is_model_ready(m) for m in models):
                        return
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
                time.sleep(0.2)
        finally:
            client.close()
        raise TritonError(f"tritonserver did not load {models} in {timeout_s:.0f}s: {self.log_tail()}")

    def log_tail(self) -> str:
        if self._log is not None:
            self._log.flush()
        return self.log_path.read_bytes()[-3000:].decode(errors="replace") if self.log_path.exists() else ""

    def stop(self, grace_s: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s + 5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        # The python backend's shared-memory regions carry our prefix: nothing of ours stays in /dev/shm,
        # even after a kill.
        for leftover in glob.glob(f"/dev/shm/{self.shm_prefix}*"):
            Path(leftover).unlink(missing_ok=True)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._workspace is not None:
            shutil.rmtree(self._workspace, ignore_errors=True)
            self._workspace = None
