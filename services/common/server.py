"""The one server bootstrap every service uses.

grpc.aio server with health (NOT_SERVING until the service says it is ready), reflection, one
interceptor that turns domain errors into status codes, message-size limits, a port file for the
launcher, and a graceful drain on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common import metrics, tracing
from services.common.errors import DomainError, internal_status, to_grpc_status
from services.common.interceptors import PerMethodInterceptor
from services.common.logs import configure_logging
from services.common.settings import DEFAULT_MAX_MESSAGE_BYTES, EnvReader, ServerSettings, SettingsError
from services.common.tls import TLSSettings, server_credentials
from services.common.tracing import configure_tracing, shutdown_tracing

log = logging.getLogger(__name__)

# Methods that answer even while the service is still loading.
_ALWAYS_OPEN = ("/grpc.health.v1.Health/", "/grpc.reflection.")


@dataclass(frozen=True)
class Registration:
    """One gRPC service to add to the server: its generated add_*_to_server, the servicer, its full name."""

    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: object
    full_name: str


class ErrorInterceptor(PerMethodInterceptor):
    """Maps DomainError to its status (with details), anything else to INTERNAL without internals,
    and answers UNAVAILABLE while the service is not ready yet."""

    def __init__(self, ready: asyncio.Event) -> None:
        super().__init__()
        self._ready = ready

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if method.startswith(_ALWAYS_OPEN):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # client-streaming RPCs are not part of this contract

    async def _gate(self, context: grpc.aio.ServicerContext) -> None:
        if not self._ready.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "service is starting: models not loaded yet")

    def _wrap_unary(self, behaviour: Callable[..., Any], method: str) -> Callable[..., Any]:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._gate(context)
            started, code = time.perf_counter(), "OK"
            try:
                with tracing.incoming(context.invocation_metadata()):
                    return await behaviour(request, context)
            except DomainError as error:
                code = error.code.name
                await self._abort_domain(context, method, error)
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except grpc.aio.AbortError:
                code = "ABORTED_BY_SERVICER"
                raise
            except Exception:  # noqa: BLE001 - every unexpected error becomes INTERNAL
                code = "INTERNAL"
                await self._abort_internal(context, method)
            finally:
                metrics.record_rpc(method, code, time.perf_counter() - started)

        return wrapped

    def _wrap_stream(self, behaviour: Callable[..., Any], method: str) -> Callable[..., Any]:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await self._gate(context)
            started, code = time.perf_counter(), "OK"
            try:
                # The whole stream runs in this call's task, so the context stays attached across the yields.
                with tracing.incoming(context.invocation_metadata()):
                    async for response in behaviour(request, context):
                        yield response
            except DomainError as error:
                code = error.code.name
                await self._abort_domain(context, method, error)
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except grpc.aio.AbortError:
                code = "ABORTED_BY_SERVICER"
                raise
            except Exception:  # noqa: BLE001 - every unexpected error becomes INTERNAL
                code = "INTERNAL"
                await self._abort_internal(context, method)
            finally:
                metrics.record_rpc(method, code, time.perf_counter() - started)

        return wrapped

    @staticmethod
    async def _abort_domain(context: grpc.aio.ServicerContext, method: str, error: DomainError) -> None:
        log.info("rpc failed", extra={"method": method, "code": error.code.name, "error": error.message})
        await context.abort_with_status(to_grpc_status(error))

    @staticmethod
    async def _abort_internal(context: grpc.aio.ServicerContext, method: str) -> None:
        reference = uuid.uuid4().hex[:12]
        log.exception("unhandled error", extra={"method": method, "reference": reference})
        await context.abort_with_status(internal_status(reference))


def create_server(
    registrations: Sequence[Registration],
    *,
    health_servicer: health.aio.HealthServicer,
    ready: asyncio.Event,
    host: str = "127.0.0.1",
    port: int = 0,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_concurrent_rpcs: int | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    credentials: grpc.ServerCredentials | None = None,
    reflection_enabled: bool = True,
    max_connection_age_s: float = 0.0,
    max_connection_age_grace_s: float = 660.0,
) -> tuple[grpc.aio.Server, int]:
    """Build a server with the given services plus health and reflection; return it and its bound port.

    Port 0 binds a free port, which is how tests run servers side by side. `interceptors` (authentication,
    quotas) run inside tracing and outside the error mapping, in the order given. With `credentials` the port
    is TLS (services.common.tls); reflection can be left out of a public port. A connection older than
    `max_connection_age_s` (0: no limit) is sent GOAWAY: its calls finish (within the grace) and the client
    reconnects, resolving its target again, so clients of a scaled-up Service find the new pods.
    """
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
        # Accept the keepalive pings of our clients (clients.open_channel: every 20 s, idle or not) and of
        # other gRPC clients down to one every 5 s (the value of grpc's keepalive example); faster ones still
        # count as ping strikes. Without these, idle pings are answered with GOAWAY too_many_pings.
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    if max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", round(max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", round(max_connection_age_grace_s * 1000)),
        ]
    server = grpc.aio.server(
        # Tracing outermost: its span covers the whole call, including the error mapping.
        interceptors=[*tracing.server_interceptors(), *interceptors, ErrorInterceptor(ready)],
        options=options,
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    for registration in registrations:
        registration.add_to_server(registration.servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [r.full_name for r in registrations]
    if reflection_enabled:
        reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    address = f"{host}:{port}"
    bound = server.add_insecure_port(address) if credentials is None else server.add_secure_port(address, credentials)
    if bound == 0:
        raise OSError(f"could not bind {host}:{port}")
    return server, bound


async def set_serving(health_servicer: health.aio.HealthServicer, names: Sequence[str], serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", *names):
        await health_servicer.set(name, status)


class Service(Protocol):
    """What a service gives the bootstrap."""

    name: str

    def registrations(self) -> Sequence[Registration]: ...

    async def start(self) -> None:
        """Load artefacts and wait for dependencies; the server is NOT_SERVING until this returns."""

    async def close(self) -> None: ...


def write_port_file(path: Path, port: int) -> None:
    """Atomically, so the launcher never reads half a number."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(str(port))
    os.replace(tmp, path)


async def serve(
    service: Service,
    settings: ServerSettings,
    *,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    tls: TLSSettings | None = None,
) -> None:
    """Run a service until SIGTERM/SIGINT, then drain in-flight RPCs for up to grace_seconds."""
    health_servicer = health.aio.HealthServicer()
    ready = asyncio.Event()
    names = [r.full_name for r in service.registrations()]
    server, port = create_server(
        service.registrations(),
        health_servicer=health_servicer,
        ready=ready,
        host=settings.host,
        port=settings.port,
        max_message_bytes=settings.max_message_bytes,
        max_concurrent_rpcs=settings.max_concurrent_rpcs,
        interceptors=interceptors,
        credentials=None if tls is None else server_credentials(tls),
        reflection_enabled=settings.reflection,
        max_connection_age_s=settings.max_connection_age_s,
        max_connection_age_grace_s=settings.max_connection_age_grace_s,
    )
    await set_serving(health_servicer, names, serving=False)
    if settings.metrics_port >= 0:
        metrics_port = metrics.serve_metrics(settings.host, settings.metrics_port)
        log.info("metrics", extra={"address": f"http://{settings.host}:{metrics_port}/metrics"})
    await server.start()
    if settings.port_file is not None:
        write_port_file(settings.port_file, port)
    transport = "plaintext" if tls is None else tls.server_mode
    log.info("listening", extra={"address": f"{settings.host}:{port}", "services": names, "transport": transport})

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    starting = asyncio.create_task(service.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    failed = False
    if starting.done():
        if starting.exception() is not None:
            log.error("start-up failed", exc_info=starting.exception())
            failed = True
        else:
            ready.set()
            await set_serving(health_servicer, names, serving=True)
            log.info("ready", extra={"address": f"{settings.host}:{port}"})
            await stopping
    else:
        starting.cancel()

    log.info("draining", extra={"grace_seconds": settings.grace_seconds})
    await health_servicer.enter_graceful_shutdown()
    await server.stop(settings.grace_seconds)
    await service.close()
    log.info("stopped")
    if failed:
        raise SystemExit(1)


def run_main(
    name: str,
    build: Callable[[EnvReader, ServerSettings], Service],
    *,
    interceptors: Callable[[EnvReader], Sequence[grpc.aio.ServerInterceptor]] | None = None,
) -> None:
    """Entry point of a service process: read settings (failing fast), configure logs, serve.

    `interceptors` builds the service's own interceptors from its settings (the gateway's authentication and
    quotas), read with the rest so one bad value stops the process before it listens.
    """
    env = EnvReader()
    try:
        settings = ServerSettings.read(env)
        service = build(env, settings)
        chain = interceptors(env) if interceptors is not None else ()
        tls = TLSSettings.read(env)
        env.finish()
    except SettingsError as error:
        print(f"{name}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(name, settings.log_level)
    configure_tracing(name)
    metrics.set_service(name)
    try:
        asyncio.run(serve(service, settings, interceptors=chain, tls=tls))
    finally:
        shutdown_tracing()
