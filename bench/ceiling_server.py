"""The plumbing ceiling for the load benchmark: a grpc.aio server answering Gateway.Recommend with a fixed
reply of k items and no model, no downstream hop. `python bench/ceiling_server.py PORT`"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc


class Ceiling(gateway_pb2_grpc.GatewayServicer):
    async def Recommend(
        self, request: gateway_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RecommendResponse:
        items = [common_pb2.ScoredItem(item_id=str(i), score=1.0 / (i + 1)) for i in range(request.k or 10)]
        return gateway_pb2.RecommendResponse(items=items, model_version="ceiling")


async def serve(port: int) -> None:
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    server = grpc.aio.server()
    gateway_pb2_grpc.add_GatewayServicer_to_server(Ceiling(), server)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    # Reflection too, as the suite's gateway has: recbench finds the service through it.
    names = [gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name, health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await checker.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
