"""Authentication and roles in front of the real Gateway service: JWTs against a JWKS (file or URL) and API
keys from a file, over real gRPC connections to a server built by create_server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http.server
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from recsys.v1 import candidates_pb2, candidates_pb2_grpc
from services.common.auth import (
    VERIFIED_TTL_S,
    AuthInterceptor,
    JwksFile,
    JwtAuthenticator,
    Principal,
    WatchedFile,
    authentication,
    main,
    new_api_key,
    parse_api_keys,
    parse_jwks,
)
from services.common.quotas import QuotaInterceptor, gateway_interceptors
from services.common.server import Registration
from services.common.settings import EnvReader, SettingsError
from tests.gateway_harness import bearer, events, recommend, register, serve_gateway, synthetic
from tests.redis_server import free_port

AUDIENCE = "recsys-gateway"
ISSUER = "https://idp.example.test/"


# --- keys, a JWKS, tokens ---------------------------------------------------------------------------------


class Keys:
    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self, rsa_kid: str = "rsa-1") -> dict[str, Any]:
        rsa_jwk = RSAAlgorithm.to_jwk(self.rsa.public_key(), as_dict=True)
        ec_jwk = ECAlgorithm.to_jwk(self.ec.public_key(), as_dict=True)
        return {
            "keys": [
                {**rsa_jwk, "kid": rsa_kid, "alg": "RS256", "use": "sig"},
                {**ec_jwk, "kid": "ec-1", "alg": "ES256", "use": "sig"},
            ]
        }

    def public_pem(self) -> bytes:
        return self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "shop",
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": now,
        "exp": now + 300,
        "roles": ["recommend"],
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def rs256(keys: Keys, kid: str = "rsa-1", **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), keys.rsa, algorithm="RS256", headers={"kid": kid})


def es256(keys: Keys, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), keys.ec, algorithm="ES256", headers={"kid": "ec-1"})


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def unsigned(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    """A token put together by hand, as an attacker would: PyJWT refuses to make these."""
    signing_input = _b64(json.dumps(header).encode()) + b"." + _b64(json.dumps(payload).encode())
    signature = b"" if secret is None else _b64(hmac.new(secret, signing_input, hashlib.sha256).digest())
    return (signing_input + b"." + signature).decode()


def write_atomically(path: Path, text: str) -> None:
    """How a Kubernetes Secret update lands: a new file swapped in."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def jwks_file(tmp_path: Path, keys: Keys) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(keys.jwks()))
    return path


def jwt_env(jwks: str, **extra: str) -> EnvReader:
    return EnvReader(
        {
            "RECSYS_AUTH": "jwt",
            "RECSYS_AUTH_JWKS": jwks,
            "RECSYS_AUTH_JWT_AUDIENCE": AUDIENCE,
            "RECSYS_AUTH_JWT_ISSUER": ISSUER,
            **extra,
        }
    )


def jwt_auth(jwks: str, **extra: str) -> AuthInterceptor:
    env = jwt_env(jwks, **extra)
    interceptor = authentication(env)
    env.finish()
    assert interceptor is not None
    return interceptor


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


async def stream_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        _ = [reply async for reply in call]
    return raised.value


# --- JWT --------------------------------------------------------------------------------------------------


async def test_recommend_role_may_recommend_and_record_events_only(keys: Keys, jwks_file: Path) -> None:
    async with serve_gateway([jwt_auth(str(jwks_file))]) as gateway:
        stub, token = gateway.stub(), bearer(rs256(keys))
        reply = await stub.Recommend(recommend(), metadata=token, timeout=5)
        assert reply.model_version == "shop"  # the handler sees the authenticated client
        assert (await stub.RecordEvents(events(), metadata=token, timeout=5)).accepted == 1

        denied = await rpc_error(stub.RegisterItems(register(), metadata=token, timeout=5))
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "/recsys.v1.Gateway/RegisterItems" in denied.details()
        assert "'admin'" in denied.details()
        denied = await stream_error(stub.GenerateSynthetic(synthetic(), metadata=token, timeout=5))
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "/recsys.v1.Gateway/GenerateSynthetic" in denied.details()


async def test_admin_role_may_call_every_method_with_an_ec_key(keys: Keys, jwks_file: Path) -> None:
    async with serve_gateway([jwt_auth(str(jwks_file))]) as gateway:
        stub, token = gateway.stub(), bearer(es256(keys, sub="ops", roles=["admin"]))
        assert (await stub.Recommend(recommend(), metadata=token, timeout=5)).model_version == "ops"
        assert (await stub.RecordEvents(events(), metadata=token, timeout=5)).accepted == 1
        assert (await stub.RegisterItems(register(), metadata=token, timeout=5)).registered == 1
        chunks = [chunk async for chunk in stub.GenerateSynthetic(synthetic(), metadata=token, timeout=5)]
        assert [user.user_id for chunk in chunks for user in chunk.users] == ["ops"]


def _other_alg_header(keys: Keys) -> str:
    return jwt.encode(claims(), keys.rsa, algorithm="RS256", headers={"kid": "ec-1"})


REFUSED: dict[str, tuple[Callable[[Keys], str], str]] = {
    "expired": (lambda k: rs256(k, exp=int(time.time()) - 120), "token expired"),
    "not yet valid": (lambda k: rs256(k, nbf=int(time.time()) + 120), "token not valid yet"),
    "wrong audience": (lambda k: rs256(k, aud="someone-else"), "token audience not accepted"),
    "wrong issuer": (lambda k: rs256(k, iss="https://evil.example.test/"), "token issuer not accepted"),
    "forged signature": (
        lambda k: jwt.encode(claims(), k.forger, algorithm="RS256", headers={"kid": "rsa-1"}),
        "token signature invalid",
    ),
    "alg none": (lambda k: unsigned({"alg": "none", "kid": "rsa-1"}, claims(roles=["admin"]), None), "algorithm"),
    "HS256 keyed with the public key": (
        lambda k: unsigned({"alg": "HS256", "kid": "rsa-1"}, claims(roles=["admin"]), k.public_pem()),
        "algorithm",
    ),
    "alg not the key's": (_other_alg_header, "token algorithm not accepted"),
    "unknown kid": (lambda k: rs256(k, kid="rsa-9"), "token signing key unknown"),
    "no exp": (lambda k: rs256(k, exp=None), "'exp'"),
    "no client": (lambda k: rs256(k, sub=None), "names no client"),
    "garbage": (lambda k: "not.a.jwt", "token malformed"),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_unacceptable_tokens_are_unauthenticated_and_never_echoed(
    case: str, keys: Keys, jwks_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make, reason = REFUSED[case]
    token = make(keys)
    caplog.set_level(logging.DEBUG)
    async with serve_gateway([jwt_auth(str(jwks_file))]) as gateway:
        error = await rpc_error(gateway.stub().Recommend(recommend(), metadata=bearer(token), timeout=5))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason in error.details()
    assert token not in error.details()
    assert caplog.records, "refusals are logged"
    for record in caplog.records:
        assert token not in str(record.__dict__)


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "missing bearer token"),
        ((("authorization", "Basic c2hvcDpodW50ZXIy"),), "Bearer <token>"),
        ((("authorization", "Bearer"),), "Bearer <token>"),
    ],
)
async def test_calls_without_a_bearer_token_are_unauthenticated(
    metadata: tuple[tuple[str, str], ...], reason: str, jwks_file: Path
) -> None:
    async with serve_gateway([jwt_auth(str(jwks_file))]) as gateway:
        error = await rpc_error(gateway.stub().Recommend(recommend(), metadata=metadata, timeout=5))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason in error.details()
    assert "c2hvcDpodW50ZXIy" not in error.details()


async def test_clock_skew_within_the_leeway_is_accepted(keys: Keys, jwks_file: Path) -> None:
    now = int(time.time())
    async with serve_gateway([jwt_auth(str(jwks_file), RECSYS_AUTH_JWT_LEEWAY_S="30")]) as gateway:
        stub = gateway.stub()
        for token in (rs256(keys, exp=now - 5), rs256(keys, nbf=now + 5)):
            assert (await stub.Recommend(recommend(), metadata=bearer(token), timeout=5)).model_version == "shop"


async def test_roles_from_scope_a_nested_claim_and_client_id_from_azp(keys: Keys, jwks_file: Path) -> None:
    async with serve_gateway([jwt_auth(str(jwks_file))]) as gateway:
        stub = gateway.stub()
        scoped = bearer(rs256(keys, roles=None, scope="openid recommend"))
        assert (await stub.Recommend(recommend(), metadata=scoped, timeout=5)).model_version == "shop"
        error = await rpc_error(stub.RegisterItems(register(), metadata=scoped, timeout=5))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        by_azp = bearer(rs256(keys, sub=None, azp="batch-job"))
        assert (await stub.Recommend(recommend(), metadata=by_azp, timeout=5)).model_version == "batch-job"

    nested = jwt_auth(str(jwks_file), RECSYS_AUTH_ROLES_CLAIM="realm_access.roles")
    async with serve_gateway([nested]) as gateway:
        token = bearer(rs256(keys, roles=None, realm_access={"roles": ["admin", "offline_access"]}))
        assert (await gateway.stub().RegisterItems(register(), metadata=token, timeout=5)).registered == 1


async def test_no_roles_means_no_method(keys: Keys, jwks_file: Path) -> None:
    async with serve_gateway([jwt_auth(str(jwks_file))]) as gateway:
        token = bearer(rs256(keys, roles=["viewer"]))
        error = await rpc_error(gateway.stub().Recommend(recommend(), metadata=token, timeout=5))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'recommend'" in error.details()


async def test_health_and_reflection_need_no_token(jwks_file: Path) -> None:
    async with serve_gateway([jwt_auth(str(jwks_file))]) as gateway:
        assert await gateway.health() == health_pb2.HealthCheckResponse.SERVING

        def list_services() -> list[str]:
            # The reflection client is synchronous: run it off the loop that serves it.
            with grpc.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
                return list(ProtoReflectionDescriptorDatabase(channel).get_services())

        assert "recsys.v1.Gateway" in await asyncio.to_thread(list_services)


class _Candidates(candidates_pb2_grpc.CandidateServiceServicer):
    async def GetCandidates(self, request, context):  # type: ignore[no-untyped-def]
        return candidates_pb2.GetCandidatesResponse(model="reached")


async def test_a_method_outside_the_role_table_is_refused_even_to_admin(keys: Keys, jwks_file: Path) -> None:
    extra = Registration(
        candidates_pb2_grpc.add_CandidateServiceServicer_to_server, _Candidates(), "recsys.v1.CandidateService"
    )
    async with serve_gateway([jwt_auth(str(jwks_file))], extra=[extra]) as gateway:
        stub = candidates_pb2_grpc.CandidateServiceStub(gateway.channel())
        token = bearer(rs256(keys, roles=["admin"]))
        error = await rpc_error(stub.GetCandidates(candidates_pb2.GetCandidatesRequest(n=1), metadata=token, timeout=5))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "/recsys.v1.CandidateService/GetCandidates" in error.details()


async def test_jwks_file_rotation_is_picked_up_without_restart(keys: Keys, jwks_file: Path) -> None:
    async with serve_gateway([jwt_auth(str(jwks_file))]) as gateway:
        stub = gateway.stub()
        old, new = bearer(rs256(keys, kid="rsa-1")), bearer(rs256(keys, kid="rsa-2"))
        await stub.Recommend(recommend(), metadata=old, timeout=5)
        write_atomically(jwks_file, json.dumps(keys.jwks(rsa_kid="rsa-2")))
        await asyncio.sleep(1.1)  # the file is looked at no more than once a second
        assert (await stub.Recommend(recommend(), metadata=new, timeout=5)).model_version == "shop"
        # A token of the withdrawn key not seen before (one verified earlier counts for up to VERIFIED_TTL_S).
        withdrawn = bearer(rs256(keys, kid="rsa-1", sub="another"))
        error = await rpc_error(stub.Recommend(recommend(), metadata=withdrawn, timeout=5))
        assert "token signing key unknown" in error.details()


class _JwksEndpoint:
    """An identity provider's JWKS endpoint on 127.0.0.1, counting its fetches."""

    def __init__(self, body: bytes) -> None:
        self.fetches = 0
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def jwks_endpoint(keys: Keys) -> Iterator[_JwksEndpoint]:
    endpoint = _JwksEndpoint(json.dumps(keys.jwks()).encode())
    yield endpoint
    endpoint.server.shutdown()
    endpoint.server.server_close()


async def test_jwks_url_is_fetched_once_and_cached(keys: Keys, jwks_endpoint: _JwksEndpoint) -> None:
    async with serve_gateway([jwt_auth(jwks_endpoint.url)]) as gateway:
        stub = gateway.stub()
        for token in (rs256(keys), es256(keys), rs256(keys, sub="other")):
            await stub.Recommend(recommend(), metadata=bearer(token), timeout=5)
        assert jwks_endpoint.fetches == 1
        error = await rpc_error(stub.Recommend(recommend(), metadata=bearer(rs256(keys, kid="rsa-9")), timeout=5))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "token signing key unknown" in error.details()
        assert jwks_endpoint.fetches == 1  # an unknown kid refetches only after the client's cooldown


async def test_an_unreachable_jwks_url_is_unavailable_not_unauthenticated(keys: Keys) -> None:
    async with serve_gateway([jwt_auth(f"http://127.0.0.1:{free_port()}/jwks.json")]) as gateway:
        error = await rpc_error(gateway.stub().Recommend(recommend(), metadata=bearer(rs256(keys)), timeout=10))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "signing keys cannot be fetched" in error.details()


def _settings_error(env: EnvReader) -> str:
    with pytest.raises(SettingsError) as raised:
        authentication(env)
        env.finish()
    return str(raised.value)


def test_jwt_settings_fail_fast(tmp_path: Path, keys: Keys, jwks_file: Path) -> None:
    message = _settings_error(EnvReader({"RECSYS_AUTH": "jwt", "RECSYS_AUTH_JWKS": str(jwks_file)}))
    assert "RECSYS_AUTH_JWT_AUDIENCE is required" in message
    assert "RECSYS_AUTH_JWT_ISSUER is required" in message
    assert "HS256" in _settings_error(jwt_env(str(jwks_file), RECSYS_AUTH_JWT_ALGORITHMS="RS256,HS256"))
    assert "https" in _settings_error(jwt_env("http://idp.example.test/jwks.json"))
    assert "No such file" in _settings_error(jwt_env(str(tmp_path / "missing.json")))
    symmetric = tmp_path / "oct.json"
    symmetric.write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}))
    assert "symmetric" in _settings_error(jwt_env(str(symmetric)))
    private = tmp_path / "private.json"
    private.write_text(json.dumps({"keys": [RSAAlgorithm.to_jwk(keys.rsa, as_dict=True)]}))
    assert "private key" in _settings_error(jwt_env(str(private)))
    assert "RECSYS_AUTH='ldap'" in _settings_error(EnvReader({"RECSYS_AUTH": "ldap"}))


def test_a_jwks_without_kids_serves_its_only_key(keys: Keys) -> None:
    jwk = RSAAlgorithm.to_jwk(keys.rsa.public_key(), as_dict=True)
    assert len(parse_jwks(json.dumps({"keys": [jwk]})).keys) == 1
    with pytest.raises(ValueError, match="no signing keys"):
        parse_jwks(json.dumps({"keys": [{**jwk, "use": "enc"}]}))


# --- API keys ---------------------------------------------------------------------------------------------


async def test_api_keys_authenticate_and_rotate_by_rewriting_the_file(tmp_path: Path) -> None:
    shop_old, shop_old_line = new_api_key("shop", ["recommend"])
    ops, ops_line = new_api_key("ops", ["admin"])
    path = tmp_path / "api-keys"
    path.write_text(f"# keys of the gateway\n{shop_old_line}\n\n{ops_line}  # operations\n")
    assert shop_old not in path.read_text()
    env = EnvReader({"RECSYS_AUTH": "api-keys", "RECSYS_AUTH_API_KEYS": str(path)})
    interceptor = authentication(env)
    env.finish()
    assert interceptor is not None
    async with serve_gateway([interceptor]) as gateway:
        stub = gateway.stub()
        assert (await stub.Recommend(recommend(), metadata=bearer(shop_old), timeout=5)).model_version == "shop"
        assert (await stub.RegisterItems(register(), metadata=bearer(ops), timeout=5)).registered == 1
        denied = await rpc_error(stub.RegisterItems(register(), metadata=bearer(shop_old), timeout=5))
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
        error = await rpc_error(stub.Recommend(recommend(), metadata=bearer(shop_old + "x"), timeout=5))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "api key not recognised" in error.details()

        shop_new, shop_new_line = new_api_key("shop", ["recommend"])
        write_atomically(path, f"{shop_new_line}\n{ops_line}\n")
        await asyncio.sleep(1.1)  # the file is looked at no more than once a second
        assert (await stub.Recommend(recommend(), metadata=bearer(shop_new), timeout=5)).model_version == "shop"
        error = await rpc_error(stub.Recommend(recommend(), metadata=bearer(shop_old), timeout=5))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED

        path.write_text(f"{shop_new_line[:20]}")  # half-written: refused, the previous keys stay in force
        await asyncio.sleep(1.1)
        assert (await stub.Recommend(recommend(), metadata=bearer(shop_new), timeout=5)).model_version == "shop"


def test_api_key_file_lines_are_checked() -> None:
    digest = "a" * 64
    assert parse_api_keys(f"{digest} shop admin,recommend\n") == {
        digest: Principal("shop", frozenset({"admin", "recommend"}))
    }
    for text, reason in [
        (f"{digest} shop", "line 1: expected"),
        ("# fine\nnot-a-hash shop admin", "line 2: the first field must be"),
        (f"{digest} shop root", "unknown roles root"),
        (f"{digest} shop admin\n{digest} ops admin", "listed twice"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_api_keys(text)


def test_new_key_command_prints_the_key_once_and_its_hash_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new-key", "--client", "shop", "--roles", "recommend,admin"]) == 0
    printed = capsys.readouterr().out.splitlines()
    key, line = printed[1].strip(), printed[3].strip()
    assert key.startswith("rk_") and len(key) > 40
    digest, client, roles = line.split()
    assert digest == hashlib.sha256(key.encode()).hexdigest()
    assert (client, roles) == ("shop", "recommend,admin")
    assert parse_api_keys(line)[digest].may("admin")
    with pytest.raises(SystemExit) as raised:
        main(["new-key", "--client", "shop", "--roles", "root"])
    assert raised.value.code == 2


def test_gateway_interceptors_authenticate_before_quotas(tmp_path: Path) -> None:
    path = tmp_path / "api-keys"
    path.write_text(new_api_key("shop", ["recommend"])[1] + "\n")
    env = EnvReader({"RECSYS_AUTH": "api-keys", "RECSYS_AUTH_API_KEYS": str(path), "RECSYS_QUOTA_RPS": "10"})
    chain = gateway_interceptors(env)
    env.finish()
    assert [type(interceptor) for interceptor in chain] == [AuthInterceptor, QuotaInterceptor]
    assert [type(interceptor) for interceptor in gateway_interceptors(EnvReader({}))] == [QuotaInterceptor]
    with pytest.raises(SettingsError, match="RECSYS_AUTH_API_KEYS is required"):
        gateway_interceptors(EnvReader({"RECSYS_AUTH": "api-keys"}))


class _CountingKeys:
    """The real JWKS file source, counting how often a token's key had to be looked up (verified afresh)."""

    def __init__(self, path: Path) -> None:
        self.source = JwksFile(WatchedFile(path, parse_jwks))
        self.lookups = 0

    async def key_for(self, kid: str | None) -> jwt.PyJWK:
        self.lookups += 1
        return await self.source.key_for(kid)


class _Clocks:
    def __init__(self) -> None:
        self.monotonic, self.wall = 500.0, time.time()

    def advance(self, seconds: float) -> None:
        self.monotonic += seconds
        self.wall += seconds


async def test_a_verified_token_is_remembered_briefly_and_never_past_its_expiry(keys: Keys, jwks_file: Path) -> None:
    counting, clocks = _CountingKeys(jwks_file), _Clocks()
    authenticator = JwtAuthenticator(
        counting,
        audience=AUDIENCE,
        issuer=ISSUER,
        leeway_s=0,
        clock=lambda: clocks.monotonic,
        wall_clock=lambda: clocks.wall,
    )
    long_lived = rs256(keys, exp=int(clocks.wall) + 3600)
    for _ in range(3):
        assert (await authenticator.authenticate(long_lived)).client_id == "shop"
    assert counting.lookups == 1
    clocks.advance(VERIFIED_TTL_S + 1)
    await authenticator.authenticate(long_lived)
    assert counting.lookups == 2  # verified again once the memory ran out

    short_lived = rs256(keys, exp=int(clocks.wall) + 10)
    await authenticator.authenticate(short_lived)
    clocks.advance(5)
    await authenticator.authenticate(short_lived)
    assert counting.lookups == 3
    clocks.advance(6)  # past its exp: not served from memory (decode, on the real clock, still accepts it)
    await authenticator.authenticate(short_lived)
    assert counting.lookups == 4


async def test_an_expired_token_is_refused_even_after_it_was_accepted(keys: Keys, jwks_file: Path) -> None:
    async with serve_gateway([jwt_auth(str(jwks_file), RECSYS_AUTH_JWT_LEEWAY_S="0")]) as gateway:
        stub = gateway.stub()
        exp = int(time.time()) + 2
        token = bearer(rs256(keys, exp=exp))
        await stub.Recommend(recommend(), metadata=token, timeout=5)
        await asyncio.sleep(exp - time.time() + 0.1)
        error = await rpc_error(stub.Recommend(recommend(), metadata=token, timeout=5))
        assert "token expired" in error.details()
