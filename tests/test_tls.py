"""TLS and mTLS on real gRPC connections: the suite's own CA, modes, and certificates rotated in place."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.common import tls
from services.common.clients import Deadline
from services.common.server import create_server, set_serving
from services.common.settings import DEFAULT_MAX_MESSAGE_BYTES, EnvReader, SettingsError
from services.common.tls import ClientCertificates, TLSError, TLSFiles, TLSSettings, channel_credentials
from services.gateway.adapters import Addresses, BreakerSettings, Downstream, StageBudgets
from services.launcher.certificates import LocalAuthority
from tests.stage_servers import Features
from tests.stage_servers import serve as serve_stage


@pytest.fixture
def authority(tmp_path: Path) -> LocalAuthority:
    return LocalAuthority.create(tmp_path / "ca")


async def _serve(settings: TLSSettings) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    credentials = tls.server_credentials(settings)
    assert credentials is not None
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return server, port


async def _check(port: int, credentials: grpc.ChannelCredentials) -> grpc.StatusCode:
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        try:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


@pytest.fixture
async def mtls_server(
    authority: LocalAuthority, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[int, TLSFiles]]:
    # Every handshake looks at the files (the server reads this when it is built): rotations are seen at once.
    monkeypatch.setattr(tls, "RECHECK_S", 0.0)
    files = authority.issue("features", ["127.0.0.1", "localhost"])
    server, port = await _serve(TLSSettings(files, "mtls"))
    yield port, files
    await server.stop(0)


async def test_mtls_accepts_a_peer_of_the_same_authority_only(
    mtls_server: tuple[int, TLSFiles], authority: LocalAuthority, tmp_path: Path
) -> None:
    port, _ = mtls_server
    gateway = authority.issue("gateway", ["127.0.0.1"]).load()
    assert await _check(port, channel_credentials(gateway)) == grpc.StatusCode.OK
    # Trusting the server but showing no certificate: refused at the handshake.
    anonymous = grpc.ssl_channel_credentials(root_certificates=gateway.ca)
    assert await _check(port, anonymous) == grpc.StatusCode.UNAVAILABLE
    # A certificate from another authority is refused too, even one that trusts the server's CA.
    stranger = LocalAuthority.create(tmp_path / "other").issue("gateway", ["127.0.0.1"]).load()
    mixed = grpc.ssl_channel_credentials(
        root_certificates=gateway.ca, private_key=stranger.key, certificate_chain=stranger.cert
    )
    assert await _check(port, mixed) == grpc.StatusCode.UNAVAILABLE


async def test_tls_mode_serves_callers_without_a_certificate(authority: LocalAuthority) -> None:
    files = authority.issue("gateway", ["127.0.0.1"])
    server, port = await _serve(TLSSettings(files, "tls"))
    try:
        assert await _check(port, grpc.ssl_channel_credentials(files.load().ca)) == grpc.StatusCode.OK
        # A plaintext caller cannot talk to a TLS port.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


async def test_a_rotated_certificate_serves_the_next_handshake_without_restart(
    mtls_server: tuple[int, TLSFiles], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, files = mtls_server
    # A whole new authority, written over the server's files the way a Secret update replaces them.
    renewed = LocalAuthority.create(tmp_path / "renewed")
    fresh = renewed.issue("features", ["127.0.0.1"])
    caller = channel_credentials(renewed.issue("gateway", ["127.0.0.1"]).load())
    assert await _check(port, caller) == grpc.StatusCode.UNAVAILABLE  # still the old certificate
    for source, target in ((fresh.cert, files.cert), (fresh.key, files.key), (fresh.ca, files.ca)):
        shutil.copyfile(source, target)
    assert await _check(port, caller) == grpc.StatusCode.OK


async def test_broken_new_files_keep_the_previous_certificate_serving(
    mtls_server: tuple[int, TLSFiles], authority: LocalAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, files = mtls_server
    caller = channel_credentials(authority.issue("gateway", ["127.0.0.1"]).load())
    files.key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nhalf written")
    assert await _check(port, caller) == grpc.StatusCode.OK


def test_client_certificates_reload_only_when_the_files_change(authority: LocalAuthority, tmp_path: Path) -> None:
    files = authority.issue("gateway", ["127.0.0.1"])
    client = ClientCertificates(files)
    assert not client.reload_if_changed()
    first = client.material
    replacement = authority.issue("gateway-renewed", ["127.0.0.1"])
    shutil.copyfile(replacement.cert, files.cert)
    shutil.copyfile(replacement.key, files.key)
    assert client.reload_if_changed()
    assert client.material.cert != first.cert
    files.key.write_bytes(b"garbage")  # mid-rotation: the key does not match yet
    assert not client.reload_if_changed()
    assert client.material.key == replacement.key.read_bytes()


def test_files_that_do_not_belong_together_are_refused(authority: LocalAuthority) -> None:
    one = authority.issue("one", ["127.0.0.1"])
    other = authority.issue("other", ["127.0.0.1"])
    with pytest.raises(TLSError, match="is not the private key"):
        TLSFiles(one.cert, other.key, one.ca).load()
    with pytest.raises(TLSError, match="cannot read"):
        TLSFiles(one.cert, one.key, one.ca.with_name("missing.crt")).load()


def _settings(environ: dict[str, str]) -> TLSSettings:
    env = EnvReader(environ)
    settings = TLSSettings.read(env)
    env.finish()
    return settings


def test_settings_from_a_directory_default_to_mtls_and_fail_fast(authority: LocalAuthority) -> None:
    files = authority.issue("features", ["127.0.0.1"])
    settings = _settings({"RECSYS_TLS_DIR": str(files.cert.parent)})
    assert settings.server_mode == "mtls" and settings.files == files
    assert _settings({}).server_mode == "off" and not _settings({}).enabled
    assert _settings({"RECSYS_TLS_DIR": str(files.cert.parent), "RECSYS_TLS_SERVER": "tls"}).server_mode == "tls"
    with pytest.raises(SettingsError, match="TLS_SERVER=tls needs"):
        _settings({"RECSYS_TLS_SERVER": "tls"})
    with pytest.raises(SettingsError, match="go together"):
        _settings({"RECSYS_TLS_CERT": str(files.cert)})
    with pytest.raises(SettingsError, match="cannot read"):
        _settings({"RECSYS_TLS_DIR": str(files.cert.parent / "nowhere")})


def test_issued_keys_are_private(authority: LocalAuthority) -> None:
    files = authority.issue("features", ["127.0.0.1"])
    assert files.key.stat().st_mode & 0o077 == 0
    assert not list(authority.directory.glob("*.key")), "the authority's own key is never written"


async def test_the_bootstrap_serves_mtls_and_leaves_reflection_out_when_asked(authority: LocalAuthority) -> None:
    files = authority.issue("features", ["127.0.0.1"])
    ready = asyncio.Event()
    ready.set()
    health_servicer = health.aio.HealthServicer()
    server, port = create_server(
        [Features().registration()],
        health_servicer=health_servicer,
        ready=ready,
        credentials=tls.server_credentials(TLSSettings(files, "mtls")),
        reflection_enabled=False,
    )
    await set_serving(health_servicer, ["recsys.v1.FeatureService"], serving=True)
    await server.start()
    try:
        caller = channel_credentials(authority.issue("gateway", ["127.0.0.1"]).load())
        assert await _check(port, caller) == grpc.StatusCode.OK
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", caller) as channel:
            stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=3
            )
            with pytest.raises(grpc.aio.AioRpcError) as absent:
                async for _ in stream:
                    pass
        assert absent.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(0)


async def test_the_gateway_reopens_its_channels_when_its_certificate_rotates(
    authority: LocalAuthority, tmp_path: Path
) -> None:
    stage = await serve_stage(
        Features().registration(),
        credentials=tls.server_credentials(TLSSettings(authority.issue("features", ["127.0.0.1"]), "mtls")),
    )
    # The gateway starts with a certificate the stage does not trust (another authority, as after a CA
    # change that reached the gateway's files late), then its files are replaced by a good one.
    files = LocalAuthority.create(tmp_path / "old").issue("gateway", ["127.0.0.1"])
    shutil.copyfile(authority.ca_file, files.ca)  # it does trust the stage, so only its own cert is refused
    budgets = StageBudgets(features=1.0, candidates=1.0, ranking=1.0, synthetic=1.0)
    addresses = Addresses(stage.address, stage.address, stage.address, stage.address)
    downstream = Downstream(
        addresses, budgets, DEFAULT_MAX_MESSAGE_BYTES, BreakerSettings(100, 0.1), ClientCertificates(files)
    )
    downstream.open()
    downstream.follow_certificate_rotation(every_s=0.05)
    try:
        with pytest.raises(Exception, match="unavailable"):
            await downstream.user_context("known-1", {}, Deadline(None))
        good = authority.issue("gateway-renewed", ["127.0.0.1"])
        shutil.copyfile(good.cert, files.cert)
        shutil.copyfile(good.key, files.key)
        for _ in range(100):
            await asyncio.sleep(0.05)
            try:
                context = await downstream.user_context("known-1", {}, Deadline(None))
            except Exception:  # noqa: BLE001 - not reopened yet
                continue
            break
        else:
            pytest.fail("the gateway never called with its renewed certificate")
        assert context.user_id == "known-1"
    finally:
        await downstream.close()
        await stage.stop()
