"""The project's client for a gateway that wants TLS and a token, over real connections, and recbench's own
checks run through it (bench/recbench_secure.py)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from recsys.v1 import gateway_pb2, gateway_pb2_grpc
from services.common import tls
from services.common.auth import authentication, new_api_key
from services.common.settings import EnvReader
from services.gateway.client import GatewayConnection
from services.launcher.certificates import LocalAuthority
from tests.gateway_harness import serve_gateway, synthetic

ROOT = Path(__file__).resolve().parents[1]
RECBENCH = ROOT.parent / "shared" / "tools" / "recbench.py"


def _secure_gateway(tmp_path: Path) -> tuple[grpc.ServerCredentials, str, Path, grpc.aio.ServerInterceptor]:
    authority = LocalAuthority.create(tmp_path / "ca")
    files = authority.issue("gateway", ["127.0.0.1", "localhost"])
    key, line = new_api_key("shop", ["recommend"])
    keys = tmp_path / "api-keys"
    keys.write_text(line + "\n")
    env = EnvReader({"RECSYS_AUTH": "api-keys", "RECSYS_AUTH_API_KEYS": str(keys)})
    interceptor = authentication(env)
    env.finish()
    assert interceptor is not None
    credentials = tls.server_credentials(tls.TLSSettings(files, "tls"))
    assert credentials is not None
    return credentials, key, authority.ca_file, interceptor


async def test_tls_and_a_token_get_through_and_nothing_less_does(tmp_path: Path) -> None:
    credentials, key, ca, interceptor = _secure_gateway(tmp_path)
    async with serve_gateway([interceptor], credentials=credentials) as gateway:
        target = f"127.0.0.1:{gateway.port}"
        request = gateway_pb2.RecommendRequest(user_id="u1", k=1)
        async with GatewayConnection(target, ca=ca, token=key).aio_channel() as channel:
            reply = await gateway_pb2_grpc.GatewayStub(channel).Recommend(request, timeout=5)
        assert reply.model_version == "shop"  # the harness answers with the authenticated client id
        async with GatewayConnection(target, ca=ca).aio_channel() as channel:
            with pytest.raises(grpc.aio.AioRpcError) as anonymous:
                await gateway_pb2_grpc.GatewayStub(channel).Recommend(request, timeout=5)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        async with GatewayConnection(target).aio_channel() as channel:  # plaintext to a TLS port
            with pytest.raises(grpc.aio.AioRpcError) as plaintext:
                await gateway_pb2_grpc.GatewayStub(channel).Recommend(request, timeout=5)
        assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.skipif(not RECBENCH.is_file(), reason=f"recbench is not at {RECBENCH}")
async def test_recbench_runs_unchanged_through_the_secure_client(tmp_path: Path) -> None:
    credentials, key, ca, interceptor = _secure_gateway(tmp_path)
    async with serve_gateway([interceptor], credentials=credentials) as gateway:
        command = [sys.executable, str(ROOT / "bench" / "recbench_secure.py"), "--ca", str(ca), "--"]
        command += [str(RECBENCH), "probe", "--target", f"127.0.0.1:{gateway.port}"]
        process = await asyncio.create_subprocess_exec(
            *command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "RECSYS_TOKEN": key},
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()[-2000:]
    answers = json.loads(out)
    # The harness validates nothing, so every probe is accepted: what matters is that each call went
    # through TLS and the token (no UNAUTHENTICATED or UNAVAILABLE).
    assert answers["k=0"] == "OK (accepted)" and answers["empty user_id"] == "OK (accepted)"


async def test_the_blocking_client_sends_the_token_on_unary_and_streaming_calls(tmp_path: Path) -> None:
    credentials, key, ca, interceptor = _secure_gateway(tmp_path)
    async with serve_gateway([interceptor], credentials=credentials) as gateway:
        target = f"127.0.0.1:{gateway.port}"

        def calls() -> tuple[str, grpc.StatusCode]:
            with GatewayConnection(target, ca=ca, token=key).channel() as channel:
                stub = gateway_pb2_grpc.GatewayStub(channel)
                reply = stub.Recommend(gateway_pb2.RecommendRequest(user_id="u1", k=1), timeout=5)
                # The key holds the recommend role only: refused for want of admin, not for want of a token.
                with pytest.raises(grpc.RpcError) as streamed:
                    list(stub.GenerateSynthetic(synthetic(), timeout=5))
            return reply.model_version, streamed.value.code()  # type: ignore[attr-defined]

        client, stream_code = await asyncio.to_thread(calls)
    assert client == "shop"
    assert stream_code == grpc.StatusCode.PERMISSION_DENIED
