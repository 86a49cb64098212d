"""recbench.py's own checks, unchanged, against a gateway that wants TLS and a bearer token.

recbench opens a plaintext channel; this runs it with that one call replaced by the project's client
(services.gateway.client.GatewayConnection): TLS trusting --ca, the token on every call. Nothing else in
recbench changes, so score, events, probe and load mean what they mean against a plaintext gateway.

    RECSYS_TOKEN=... .venv/bin/python bench/recbench_secure.py --ca CA_FILE -- \\
        ../shared/tools/recbench.py score --target 127.0.0.1:50061 --split SPLIT

The token comes from RECSYS_TOKEN or --token-file, never the command line (other users can read that).
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.gateway.client import GatewayConnection  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ca", type=Path, required=True, help="the CA that signed the gateway's certificate")
    parser.add_argument("--token-file", type=Path, help="a file holding the bearer token (else RECSYS_TOKEN)")
    parser.add_argument("recbench", nargs=argparse.REMAINDER, help="-- recbench.py and its arguments")
    args = parser.parse_args()
    command = args.recbench[1:] if args.recbench[:1] == ["--"] else args.recbench
    if not command:
        parser.error("give recbench.py and its arguments after --")
    token = args.token_file.read_text().strip() if args.token_file else os.environ.get("RECSYS_TOKEN", "")
    if not token:
        parser.error("no token: set RECSYS_TOKEN or pass --token-file")

    def secure_channel(target: str, options: Any = None, compression: Any = None) -> grpc.Channel:
        return GatewayConnection(target, ca=args.ca, token=token).channel(options)

    grpc.insecure_channel = secure_channel  # type: ignore[assignment]
    sys.argv = command
    runpy.run_path(command[0], run_name="__main__")


if __name__ == "__main__":
    main()
