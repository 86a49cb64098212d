"""Connecting to Redis: credentials never reach a log line or an error, and rediss:// (TLS) with a CA."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from redis.asyncio.connection import SSLConnection

from services.common.errors import Unavailable
from services.common.settings import EnvReader
from services.common.stores import StateSettings, open_redis, redact_url, redis_client
from tests.redis_server import free_port, redis_server


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://user:s3cret@cache:6379/0", "redis://user:***@cache:6379/0"),
        ("rediss://:s3cret@cache.example:6380/2", "rediss://:***@cache.example:6380/2"),
        ("redis://user:p%40ss:word@cache/0", "redis://user:***@cache/0"),
        ("redis://cache:6379/0?password=s3cret&db=1", "redis://cache:6379/0?password=***&db=1"),
        ("unix://:s3cret@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("redis://[::1:6379/0", "<unparsable URL, 19 characters>"),
    ],
)
def test_urls_lose_their_password(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


async def test_a_redis_that_does_not_answer_is_named_without_its_password() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(Unavailable) as raised:
        await open_redis(f"redis://admin:s3cret-pw@127.0.0.1:{port}/0")
    assert "s3cret-pw" not in raised.value.message
    assert f"redis://admin:***@127.0.0.1:{port}/0" in raised.value.message


async def test_a_refused_password_is_not_repeated(tmp_path: Path) -> None:
    with redis_server(tmp_path, "--requirepass", "right-one") as server:
        with pytest.raises(Unavailable) as raised:
            await open_redis(server.url(credentials=":wrong-one"))
        assert "wrong-one" not in raised.value.message and "right-one" not in raised.value.message
        client = await open_redis(server.url(credentials=":right-one"))
        assert await client.ping()
        await client.aclose()


def test_settings_refuse_bad_urls_without_showing_them(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    env = EnvReader({"RECSYS_REDIS_URL": "http://user:s3cret@cache/0", "RECSYS_REDIS_CA": str(ca)})
    StateSettings.read(env, tmp_path)
    problems = "; ".join(env.problems)
    assert "s3cret" not in problems
    assert "RECSYS_REDIS_URL='http://user:***@cache/0' is not a redis://" in problems
    assert "RECSYS_REDIS_CA is set but RECSYS_REDIS_URL is not a rediss://" in problems

    env = EnvReader({"RECSYS_REDIS_URL": "rediss://cache:6380/0", "RECSYS_REDIS_CA": str(tmp_path / "missing.crt")})
    StateSettings.read(env, tmp_path)
    assert env.problems == [f"RECSYS_REDIS_CA={str(tmp_path / 'missing.crt')!r} is not a file"]

    env = EnvReader({"RECSYS_REDIS_URL": "rediss://:pw@cache:6380/0", "RECSYS_REDIS_CA": str(ca)})
    state = StateSettings.read(env, tmp_path)
    assert env.problems == [] and state.redis_ca == ca


async def test_a_rediss_url_with_a_ca_builds_a_tls_client(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    client = redis_client("rediss://:pw@cache.example:6380/0", ca)
    pool = client.connection_pool
    assert pool.connection_class is SSLConnection
    assert pool.connection_kwargs["ssl_ca_certs"] == str(ca)
    assert pool.connection_kwargs.get("ssl_cert_reqs", "required") == "required"
    await client.aclose()
    with pytest.raises(ValueError, match="rediss://"):
        redis_client("redis://:pw@cache:6379/0", ca)


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None, issuer_key: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def write_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("test redis CA", ca_key, None, ca_key)
    server_cert = _certificate("127.0.0.1", server_key, ca_cert.subject, ca_key)
    paths = directory / "ca.crt", directory / "server.crt", directory / "server.key"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


async def test_rediss_talks_tls_to_a_server_its_ca_signed(tmp_path: Path) -> None:
    ca, cert, key = write_tls_files(tmp_path)
    tls = ("--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca))
    with redis_server(tmp_path, *tls, "--tls-auth-clients", "no", tls=True) as server:
        client = await open_redis(server.url("rediss"), ca)
        assert await client.set("over-tls", "yes") and await client.get("over-tls") == b"yes"
        await client.aclose()
        with pytest.raises(Unavailable, match="does not answer"):  # the system's CAs do not know this one
            await open_redis(server.url("rediss"))
        with pytest.raises(Unavailable):  # nor does it speak plain Redis
            await open_redis(server.url("redis"))
