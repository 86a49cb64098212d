"""The shape every server interceptor of the suite shares: a method's handler is wrapped once, the first
time the method is called, and the wrapped handler is reused (a method's handler never changes while the
server runs); what the wrapper checks still runs on every call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc


class PerMethodInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """The handler to serve `method` with (the handler itself to leave it alone)."""
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method: UNIMPLEMENTED, and nothing cached for names callers make up
            return None
        wrapped = self.wrap(handler, method)
        self._wrapped[method] = wrapped
        return wrapped
