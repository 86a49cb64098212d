"""Who may call the gateway: bearer tokens, roles per method, deny by default.

Every call outside health and reflection carries `authorization: Bearer <token>` metadata. RECSYS_AUTH picks
how the token is checked:

- `none` (default): no check at all (a trusted network, or a mesh that authenticates in front).
- `jwt`: a JWT signed by the identity provider with an asymmetric algorithm (RECSYS_AUTH_JWT_ALGORITHMS,
  default RS256,ES256,EdDSA; `none` and HS* are never accepted). Its keys come from a JWKS: a file
  (RECSYS_AUTH_JWKS=/path/jwks.json, read again when it changes) or an https URL (PyJWKClient, which caches
  the set for RECSYS_AUTH_JWKS_CACHE_S and refetches once, rate-limited, for an unknown `kid`). `aud` must be
  RECSYS_AUTH_JWT_AUDIENCE, `iss` RECSYS_AUTH_JWT_ISSUER; `exp` is required, `exp`/`nbf`/`iat` are checked
  with RECSYS_AUTH_JWT_LEEWAY_S of clock skew. Roles come from the RECSYS_AUTH_ROLES_CLAIM claim (default
  `roles`; a list or a space-separated string; a dotted name reaches into nested objects, e.g.
  `realm_access.roles`) and from OAuth2 `scope`; the client id from `sub`, else `azp`, else `client_id`.
  A verified token is remembered for up to 30 s (never past its `exp`), so a client's repeated token costs
  a lookup, not a signature check. The JWKS URL may be http:// only to a loopback address.
- `api-keys`: opaque keys listed in RECSYS_AUTH_API_KEYS, a text file holding only their SHA-256 hashes, one
  key a line (blank lines and `#` comments are skipped)::

      # sha256(key) as 64 hex digits                                 client id  roles (comma-separated)
      9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  billing    recommend,admin

  The file is looked at no more than once a second and read again when it changes, so keys rotate without a
  restart (a Kubernetes Secret mount): add the new key's line, move the client over, delete the old line. A
  version of the file that does not parse is refused and the previous one stays in force.
  `python -m services.common.auth new-key --client billing --roles recommend` prints a fresh key (once;
  only the client keeps it) and its line for the file.

Roles: `recommend` may call Recommend and RecordEvents; `admin` may also call RegisterItems and
GenerateSynthetic. A method missing from METHOD_ROLES is refused to everyone. Refusals are UNAUTHENTICATED
(no, malformed or unacceptable token; the reason, never the token) or PERMISSION_DENIED (the method and the
role it needs). The authorization header is never logged.

The caller's Principal is in a contextvar while its call runs (current_principal / current_client_id), for
the interceptors after this one (quotas) and the handlers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import hashlib
import ipaddress
import json
import logging
import re
import secrets
import sys
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol, TypeVar
from urllib.parse import urlparse

import grpc
import jwt

from services.common import metrics
from services.common.errors import DomainError, Unavailable, to_grpc_status
from services.common.interceptors import PerMethodInterceptor
from services.common.settings import ENV_PREFIX, EnvReader, SettingsError
from services.common.watched import RECHECK_S, Watched

log = logging.getLogger(__name__)

T = TypeVar("T")

MODES = ("none", "jwt", "api-keys")
RECOMMEND, ADMIN = "recommend", "admin"
# What each role may do: admin includes everything recommend allows.
ROLE_GRANTS: Mapping[str, frozenset[str]] = {
    RECOMMEND: frozenset({RECOMMEND}),
    ADMIN: frozenset({RECOMMEND, ADMIN}),
}
# The role each method needs. Anything not here is refused (deny by default).
METHOD_ROLES: Mapping[str, str] = {
    "/recsys.v1.Gateway/Recommend": RECOMMEND,
    "/recsys.v1.Gateway/RecordEvents": RECOMMEND,
    "/recsys.v1.Gateway/RegisterItems": ADMIN,
    "/recsys.v1.Gateway/GenerateSynthetic": ADMIN,
}
# Open without a token: probes must work without credentials, and reflection only describes the public
# contract (where the server does not enable reflection, its methods do not exist: UNIMPLEMENTED).
OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")
HEALTH_METHODS = "/grpc.health.v1.Health/"

# Only asymmetric algorithms: with them the gateway holds nothing that can sign a token.
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
DEFAULT_ALGORITHMS = "RS256,ES256,EdDSA"
# A JWKS fetch holds up the calls waiting for a key; an identity provider slower than this is down.
JWKS_FETCH_TIMEOUT_S = 5.0
API_KEY_PREFIX = "rk_"
# Verified JWTs remembered (JwtAuthenticator): for how long at most, and how many.
VERIFIED_TTL_S = 30.0
VERIFIED_MAX = 10_000
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:@/+-]{1,128}")


# --- who is calling ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: its client id and the roles it was given."""

    client_id: str
    roles: frozenset[str]
    grants: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        granted = frozenset().union(*(ROLE_GRANTS.get(role, frozenset()) for role in self.roles))
        object.__setattr__(self, "grants", granted)

    def may(self, role: str) -> bool:
        return role in self.grants


_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("recsys_principal", default=None)


def current_principal() -> Principal | None:
    """The caller of the call being handled; None where authentication is off."""
    return _principal.get()


def current_client_id() -> str | None:
    principal = _principal.get()
    return None if principal is None else principal.client_id


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


# --- one wrapper per method, one check per call -----------------------------------------------------------


class Gate(Protocol):
    """A per-call check around one method: admit raises a DomainError to refuse the call; what it returns
    is handed to release when the call ends (a stream: when it finishes or is cancelled)."""

    async def admit(self, context: grpc.aio.ServicerContext) -> Any: ...

    def release(self, admitted: Any) -> None: ...


async def refuse(context: grpc.aio.ServicerContext, method: str, error: DomainError, started: float) -> NoReturn:
    """Answer a refused call with the error's status (and details); counted and logged like other answers."""
    log.info(
        "rpc refused", extra={"method": method, "code": error.code.name, "error": error.message, "peer": context.peer()}
    )
    metrics.record_rpc(method, error.code.name, time.perf_counter() - started)
    await context.abort_with_status(to_grpc_status(error))
    raise AssertionError("abort_with_status returned")  # it always raises AbortError


def _gate_unary(behaviour: Callable[..., Awaitable[Any]], method: str, gate: Gate) -> Callable[..., Awaitable[Any]]:
    async def gated(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        try:
            admitted = await gate.admit(context)
        except DomainError as error:
            await refuse(context, method, error, started)
        try:
            return await behaviour(request, context)
        finally:
            gate.release(admitted)

    return gated


def _gate_stream(behaviour: Callable[..., AsyncIterator[Any]], method: str, gate: Gate) -> Callable[..., Any]:
    async def gated(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started = time.perf_counter()
        try:
            admitted = await gate.admit(context)
        except DomainError as error:
            await refuse(context, method, error, started)
        try:
            async for response in behaviour(request, context):
                yield response
        finally:  # also on cancellation: the stream's hold ends with it
            gate.release(admitted)

    return gated


def gate_handler(handler: grpc.RpcMethodHandler, method: str, gate: Gate) -> grpc.RpcMethodHandler:
    """The same handler with `gate` around every call, for each of the four kinds of RPC."""
    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_gate_unary(handler.unary_unary, method, gate), **serializers)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(_gate_stream(handler.unary_stream, method, gate), **serializers)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(_gate_unary(handler.stream_unary, method, gate), **serializers)
    return grpc.stream_stream_rpc_method_handler(_gate_stream(handler.stream_stream, method, gate), **serializers)


class GatingInterceptor(PerMethodInterceptor):
    """Puts a Gate around each method's handler; the gate's checks run on every call."""

    def gate_for(self, method: str) -> Gate | None:
        """The gate for `method`, or None to leave it alone."""
        raise NotImplementedError

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        gate = self.gate_for(method)
        return handler if gate is None else gate_handler(handler, method, gate)


# --- files read again when they change --------------------------------------------------------------------


class WatchedFile(Watched[T]):
    """One UTF-8 file's parsed content, parsed again when the file changes (services.common.watched): a
    version that cannot be read or parsed is refused and the previous one stays; the first must parse
    (OSError/ValueError otherwise)."""

    def __init__(
        self,
        path: Path,
        parse: Callable[[str], T],
        *,
        recheck_s: float = RECHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        super().__init__(
            [path],
            lambda: parse(path.read_text(encoding="utf-8")),
            (OSError, ValueError),  # UnicodeDecodeError is a ValueError
            recheck_s=recheck_s,
            clock=clock,
        )


# --- checking a token -------------------------------------------------------------------------------------


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> Principal:
        """The token's principal; Unauthenticated if it is not acceptable (Unavailable if it cannot be
        checked right now)."""
        ...


def _validated_roles(names: Iterable[str], where: str) -> frozenset[str]:
    roles = frozenset(name for name in names if name)
    if not roles:
        raise ValueError(f"{where}: no roles (known: {', '.join(ROLE_GRANTS)})")
    unknown = sorted(roles - ROLE_GRANTS.keys())
    if unknown:
        raise ValueError(f"{where}: unknown roles {', '.join(unknown)} (known: {', '.join(ROLE_GRANTS)})")
    return roles


def _validated_client(client_id: str, where: str) -> str:
    if not _CLIENT_ID.fullmatch(client_id):
        raise ValueError(f"{where}: client id must be 1-128 of letters, digits and ._:@/+-")
    return client_id


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_api_keys(text: str) -> dict[str, Principal]:
    """The API-key file (see the module docstring): hash -> principal. ValueError names the bad line."""
    keys: dict[str, Principal] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"line {number}"
        fields = line.split()
        if len(fields) != 3:
            raise ValueError(f"{where}: expected '<sha256 hex> <client id> <role,role>', got {len(fields)} fields")
        digest, client_id, roles = fields
        if not _SHA256_HEX.fullmatch(digest):
            raise ValueError(f"{where}: the first field must be a key's SHA-256 as 64 lower-case hex digits")
        if digest in keys:
            raise ValueError(f"{where}: the same key hash is listed twice")
        keys[digest] = Principal(_validated_client(client_id, where), _validated_roles(roles.split(","), where))
    return keys


class ApiKeyAuthenticator:
    """Opaque keys, known to the gateway only by their SHA-256 (a dict lookup of the hash: nothing is
    compared character by character with a secret)."""

    def __init__(self, keys: WatchedFile[dict[str, Principal]]) -> None:
        self._keys = keys

    async def authenticate(self, token: str) -> Principal:
        principal = self._keys.current().get(hash_key(token))
        if principal is None:
            raise Unauthenticated("api key not recognised")
        return principal


def new_api_key(client_id: str, roles: Sequence[str]) -> tuple[str, str]:
    """A fresh random key (256 bits) and the line that admits it to the API-key file."""
    _validated_client(client_id, "client")
    granted = _validated_roles(roles, "roles")
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    ordered = [role for role in ROLE_GRANTS if role in granted]
    return key, f"{hash_key(key)} {client_id} {','.join(ordered)}"


class KeySource(Protocol):
    async def key_for(self, kid: str | None) -> jwt.PyJWK:
        """The public key that signed a token with this `kid`; Unauthenticated if there is none."""
        ...


@dataclass(frozen=True)
class SigningKeys:
    by_kid: dict[str, jwt.PyJWK]
    keys: tuple[jwt.PyJWK, ...]


def parse_jwks(text: str) -> SigningKeys:
    """A JWKS of public signing keys. Symmetric or private keys are refused: either would mean the gateway
    holds something that can sign tokens."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError('not a JWKS: expected {"keys": [...]}')
    by_kid: dict[str, jwt.PyJWK] = {}
    keys: list[jwt.PyJWK] = []
    for index, entry in enumerate(data["keys"]):
        where = f"keys[{index}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is not an object")
        if entry.get("kty") == "oct":
            raise ValueError(f"{where} is a symmetric (oct) key; only public keys verify tokens here")
        if "d" in entry:
            raise ValueError(f"{where} holds a private key; the JWKS must hold only public keys")
        if entry.get("use", "sig") != "sig":
            continue  # encryption keys have no say in signatures
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError as error:
            raise ValueError(f"{where}: {error}") from None
        kid = entry.get("kid")
        if kid is not None:
            if not isinstance(kid, str) or kid in by_kid:
                raise ValueError(f"{where}: kid must be a string, unique in the set")
            by_kid[kid] = key
        keys.append(key)
    if not keys:
        raise ValueError("the JWKS has no signing keys")
    return SigningKeys(by_kid, tuple(keys))


class JwksFile:
    """Keys from a JWKS file, read again when it changes (the provider's keys rotate without a restart)."""

    def __init__(self, keys: WatchedFile[SigningKeys]) -> None:
        self._keys = keys

    async def key_for(self, kid: str | None) -> jwt.PyJWK:
        keys = self._keys.current()
        if kid is None:
            # Without a kid the choice is only unambiguous when the set holds one key.
            if len(keys.keys) == 1:
                return keys.keys[0]
            raise Unauthenticated("token has no key id (kid)")
        key = keys.by_kid.get(kid)
        if key is None:
            raise Unauthenticated("token signing key unknown")
        return key


class JwksUrl:
    """Keys from the provider's JWKS endpoint through PyJWKClient and its cache. Its lookups block on the
    network when the cache is stale, so they run in a worker thread, never on the event loop."""

    def __init__(self, url: str, cache_s: float = 300.0) -> None:
        self.url = url
        self._client = jwt.PyJWKClient(url, cache_jwk_set=True, lifespan=cache_s, timeout=JWKS_FETCH_TIMEOUT_S)

    async def key_for(self, kid: str | None) -> jwt.PyJWK:
        if kid is None:
            raise Unauthenticated("token has no key id (kid)")
        try:
            keys = await asyncio.to_thread(self._client.get_signing_keys)
        except jwt.PyJWTError as error:
            raise self._unavailable(error) from None
        key = self._client.match_kid(keys, kid)
        if key is not None:
            return key
        try:  # an unknown kid may be a key the provider just added: one refetch, rate-limited by the client
            return await asyncio.to_thread(self._client.get_signing_key, kid)
        except jwt.PyJWKClientConnectionError as error:
            raise self._unavailable(error) from None
        except jwt.PyJWTError:
            raise Unauthenticated("token signing key unknown") from None

    def _unavailable(self, error: Exception) -> Unavailable:
        log.warning("signing keys cannot be fetched", extra={"url": self.url, "error": str(error)})
        return Unavailable("signing keys cannot be fetched right now; retry later")


# Most specific first: InvalidSignatureError is a DecodeError, and every one of them an InvalidTokenError.
_JWT_REFUSALS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not valid yet"),
    (jwt.InvalidAudienceError, "token audience not accepted"),
    (jwt.InvalidIssuerError, "token issuer not accepted"),
    (jwt.InvalidSignatureError, "token signature invalid"),
    (jwt.InvalidAlgorithmError, "token algorithm not accepted"),
    (jwt.InvalidIssuedAtError, "token issued-at (iat) invalid"),
    (jwt.DecodeError, "token malformed"),
)


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by its name, or by a dotted path into nested objects (`realm_access.roles`); a name that
    holds dots itself (`https://example.com/roles`) is found as it is first."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


class JwtAuthenticator:
    """Verifies a JWT, then remembers it for at most VERIFIED_TTL_S (never past its `exp`): a client sends
    the same token on every call until it expires, and a signature check costs ~100 us where a lookup costs
    ~1 us. A key withdrawn from the JWKS therefore stops counting within VERIFIED_TTL_S plus the JWKS's own
    refresh (RECHECK_S for a file, RECSYS_AUTH_JWKS_CACHE_S for a URL)."""

    def __init__(
        self,
        keys: KeySource,
        *,
        audience: str,
        issuer: str,
        algorithms: Sequence[str] = tuple(DEFAULT_ALGORITHMS.split(",")),
        leeway_s: float = 30.0,
        roles_claim: str = "roles",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        refused = sorted(set(algorithms) - set(ASYMMETRIC_ALGORITHMS))
        if refused:
            raise ValueError(f"only asymmetric algorithms verify tokens here, not {', '.join(refused)}")
        if not algorithms:
            raise ValueError("no algorithms to verify tokens with")
        self._keys = keys
        self._audience = audience
        self._issuer = issuer
        self._algorithms = list(algorithms)
        self._leeway_s = leeway_s
        self._roles_claim = roles_claim
        self._clock = clock
        self._wall_clock = wall_clock
        # token -> (its principal, monotonic time it stops counting); oldest dropped first past VERIFIED_MAX.
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    async def authenticate(self, token: str) -> Principal:
        remembered = self._verified.get(token)
        if remembered is not None:
            principal, until = remembered
            if self._clock() < until:
                return principal
            del self._verified[token]
        claims = await self._verify(token)
        principal = Principal(self._client_id(claims), self._roles(claims))
        self._remember(token, principal, float(claims["exp"]))
        return principal

    def _remember(self, token: str, principal: Principal, exp: float) -> None:
        now = self._clock()
        # exp is wall-clock seconds: the same moment on the monotonic clock, with the leeway decode allowed.
        until = min(now + VERIFIED_TTL_S, now + exp + self._leeway_s - self._wall_clock())
        if until <= now:
            return
        if len(self._verified) >= VERIFIED_MAX:
            self._verified.popitem(last=False)
        self._verified[token] = (principal, until)

    async def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("token malformed") from None
        # Before any key is looked up: `none`, HS* (a public key used as an HMAC secret) and the rest.
        if header.get("alg") not in self._algorithms:
            raise Unauthenticated(f"token algorithm not accepted (accepted: {', '.join(self._algorithms)})")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated("token malformed")
        key = await self._keys.key_for(kid)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.MissingRequiredClaimError as error:
            raise Unauthenticated(f"token has no {error.claim!r} claim") from None
        except jwt.PyJWTError as error:
            reason = next((text for kind, text in _JWT_REFUSALS if isinstance(error, kind)), "token not accepted")
            raise Unauthenticated(reason) from None
        return claims

    @staticmethod
    def _client_id(claims: Mapping[str, Any]) -> str:
        for name in ("sub", "azp", "client_id"):
            value = claims.get(name)
            if isinstance(value, str) and value:
                return value
        raise Unauthenticated("token names no client (sub, azp or client_id)")

    def _roles(self, claims: Mapping[str, Any]) -> frozenset[str]:
        names = _names(_claim(claims, self._roles_claim)) + _names(claims.get("scope"))
        return frozenset(name for name in names if name in ROLE_GRANTS)


# --- the interceptor --------------------------------------------------------------------------------------


def bearer_token(metadata: Sequence[tuple[str, Any]] | None) -> str:
    """The token of the one `authorization: Bearer <token>` header; Unauthenticated otherwise."""
    values = [value for key, value in metadata or () if key == "authorization"]
    if not values:
        raise Unauthenticated("missing bearer token (authorization: Bearer <token>)")
    if len(values) > 1:
        raise Unauthenticated("more than one authorization header")
    value = values[0]
    scheme, _, token = value.strip().partition(" ") if isinstance(value, str) else ("", "", "")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("authorization must be 'Bearer <token>'")
    return token


class _AuthGate:
    def __init__(self, method: str, authenticator: Authenticator) -> None:
        self._method = method
        self._role = METHOD_ROLES.get(method)
        self._authenticator = authenticator

    async def admit(self, context: grpc.aio.ServicerContext) -> contextvars.Token[Principal | None]:
        principal = await self._authenticator.authenticate(bearer_token(context.invocation_metadata()))
        if self._role is None:
            raise PermissionDenied(f"permission denied: {self._method} is open to no role")
        if not principal.may(self._role):
            held = ", ".join(sorted(principal.roles)) or "none"
            raise PermissionDenied(
                f"permission denied: {self._method} needs the {self._role!r} role "
                f"(client {principal.client_id!r} has: {held})"
            )
        return _principal.set(principal)

    def release(self, admitted: contextvars.Token[Principal | None]) -> None:
        # A stream closed from another context (its generator finalised late) cannot reset: that context ends.
        with contextlib.suppress(ValueError):
            _principal.reset(admitted)


class AuthInterceptor(GatingInterceptor):
    """Checks the bearer token and the method's role on every call except health and reflection."""

    def __init__(self, authenticator: Authenticator, open_methods: tuple[str, ...] = OPEN_METHODS) -> None:
        super().__init__()
        self._authenticator = authenticator
        self._open_methods = open_methods

    def gate_for(self, method: str) -> Gate | None:
        if method.startswith(self._open_methods):
            return None
        return _AuthGate(method, self._authenticator)


# --- settings ---------------------------------------------------------------------------------------------


def _jwks_source(env: EnvReader, location: str) -> KeySource | None:
    if location.startswith(("https://", "http://")):
        parsed = urlparse(location)
        if parsed.scheme == "http" and not _is_loopback(parsed.hostname or ""):
            env.problems.append(f"{ENV_PREFIX}AUTH_JWKS: a JWKS URL must be https:// (http:// only to loopback)")
            return None
        return JwksUrl(location, env.number("AUTH_JWKS_CACHE_S", 300.0, 1.0, 86_400.0))
    try:
        return JwksFile(WatchedFile(Path(location), parse_jwks))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) else str(error)
        env.problems.append(f"{ENV_PREFIX}AUTH_JWKS={location!r}: {reason}")
        return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _jwt_from_env(env: EnvReader) -> Authenticator | None:
    location = env.required("AUTH_JWKS")
    audience = env.required("AUTH_JWT_AUDIENCE")
    issuer = env.required("AUTH_JWT_ISSUER")
    algorithms = [name.strip() for name in env.string("AUTH_JWT_ALGORITHMS", DEFAULT_ALGORITHMS).split(",")]
    refused = [name for name in algorithms if name not in ASYMMETRIC_ALGORITHMS]
    if refused:
        env.problems.append(
            f"{ENV_PREFIX}AUTH_JWT_ALGORITHMS: {', '.join(refused)} not accepted "
            f"(asymmetric only: {', '.join(ASYMMETRIC_ALGORITHMS)})"
        )
    leeway_s = env.integer("AUTH_JWT_LEEWAY_S", 30, 0, 300)
    roles_claim = env.string("AUTH_ROLES_CLAIM", "roles")
    keys = _jwks_source(env, location) if location else None
    if keys is None or refused or not audience or not issuer:
        return None
    return JwtAuthenticator(
        keys, audience=audience, issuer=issuer, algorithms=algorithms, leeway_s=leeway_s, roles_claim=roles_claim
    )


def _api_keys_from_env(env: EnvReader) -> Authenticator | None:
    location = env.required("AUTH_API_KEYS")
    if not location:
        return None
    try:
        return ApiKeyAuthenticator(WatchedFile(Path(location), parse_api_keys))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) else str(error)
        env.problems.append(f"{ENV_PREFIX}AUTH_API_KEYS={location!r}: {reason}")
        return None


def authentication(env: EnvReader) -> AuthInterceptor | None:
    """The interceptor RECSYS_AUTH asks for (None for `none`). Fails closed: settings that do not build an
    authenticator raise SettingsError here rather than leave the port open."""
    mode = env.choice("AUTH", "none", MODES)
    if mode not in ("jwt", "api-keys"):
        return None
    authenticator = _jwt_from_env(env) if mode == "jwt" else _api_keys_from_env(env)
    if authenticator is None:
        env.finish()
        raise SettingsError(f"invalid settings: {ENV_PREFIX}AUTH={mode} is not fully configured")
    return AuthInterceptor(authenticator)


# --- python -m services.common.auth new-key ----------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.common.auth", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    new_key = commands.add_parser("new-key", help="print a fresh API key and its line for RECSYS_AUTH_API_KEYS")
    new_key.add_argument("--client", required=True, help="the client id the key authenticates as")
    new_key.add_argument("--roles", required=True, help=f"comma-separated, of: {', '.join(ROLE_GRANTS)}")
    arguments = parser.parse_args(argv)
    try:
        key, line = new_api_key(arguments.client, [role.strip() for role in arguments.roles.split(",")])
    except ValueError as error:
        parser.error(str(error))
    print(f"API key for {arguments.client} (shown this once; give it to the client, keep no copy):")
    print(f"  {key}")
    print(f"Line to add to the {ENV_PREFIX}AUTH_API_KEYS file:")
    print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
