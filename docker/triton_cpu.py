"""Triton on CPU inside the services image: the tritonserver binary shipped in the nvidia-pytriton wheel, run
the way `recsys serve` runs it (services/launcher/triton.py prepares its python backend and environment), but
listening on every interface with HTTP health endpoints for the kubelet's probes.

    python /opt/recsys/triton_cpu.py [EXTRA_TRITONSERVER_ARGS...]
    python /opt/recsys/triton_cpu.py --print-command      # the command it would run, one argument a line

The python backend's stub embeds this image's interpreter, so the model's `model.py` imports the recsys
package from the same virtual environment the services run in: the NGC image has no such environment.

Like `recsys serve`, it serves the artefact root's serving repository (triton-repository/, one model per
version: ranker-<version>) with explicit model control, and loads the version `current` names before it
reports ready; the ranking service loads newer versions as `current` moves.

Environment:
    TRITON_ARTIFACTS           the artefact root (default /artifacts)
    TRITON_MODEL_CONFIG_NAME   a deployment configuration (configs/<name>.pbtxt); default config.pbtxt
    TRITON_GRPC_PORT / TRITON_HTTP_PORT / TRITON_METRICS_PORT   default 8001 / 8000 / 8002
    TRITON_WORKSPACE           writable scratch directory (default /tmp): backends and caches go below it
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

PRINT_FLAG = "--print-command"
DEFAULT_ARTIFACTS = "/artifacts"


def command(env: Mapping[str, str], workspace: Path, extra: Sequence[str] = ()) -> list[str]:
    """The tritonserver command line; prepares the python backend under `workspace`."""
    from recsys_runtime.artifacts import CURRENT
    from recsys_runtime.triton_contract import SERVING_REPOSITORY_DIR, served_model_name
    from services.launcher.triton import DIST, prepare_backends

    root = Path(env.get("TRITON_ARTIFACTS") or DEFAULT_ARTIFACTS)
    backends = prepare_backends(workspace)
    args = [
        str(DIST / "bin" / "tritonserver"),
        f"--model-repository={root / SERVING_REPOSITORY_DIR}",
        f"--backend-directory={backends}",
        f"--cache-directory={workspace / 'caches'}",
        "--grpc-address=0.0.0.0",
        f"--grpc-port={env.get('TRITON_GRPC_PORT') or 8001}",
        "--http-address=0.0.0.0",
        f"--http-port={env.get('TRITON_HTTP_PORT') or 8000}",
        "--allow-metrics=true",
        f"--metrics-port={env.get('TRITON_METRICS_PORT') or 8002}",
        "--model-control-mode=explicit",
        "--strict-readiness=true",
        "--exit-timeout-secs=10",
        "--log-verbose=0",
    ]
    current = root / CURRENT
    if current.is_symlink():
        args.append(f"--load-model={served_model_name(os.readlink(current))}")
    if env.get("TRITON_MODEL_CONFIG_NAME"):
        args.append(f"--model-config-name={env['TRITON_MODEL_CONFIG_NAME']}")
    return [*args, *extra]


def main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    extra = list(argv[1:])
    printing = extra[:1] == [PRINT_FLAG]
    if printing:
        extra = extra[1:]
    # A fresh directory each start: /tmp (an emptyDir) outlives a restarted container.
    root = Path(env.get("TRITON_WORKSPACE") or tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    workspace = Path(tempfile.mkdtemp(prefix="triton-", dir=root))
    args = command(env, workspace, extra)
    if printing:
        print("\n".join(args))
        return 0
    from services.launcher.triton import server_environment

    sys.stdout.flush()
    # tritonserver becomes the container's main process: the kubelet's SIGTERM reaches it directly.
    os.execve(args[0], args, server_environment())
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv, os.environ))
