"""The environment every process of the suite starts with."""

from __future__ import annotations

from collections.abc import Mapping

# One BLAS thread per process. Each service runs small matrix products per request; with OpenBLAS's
# default (a thread per core, spinning while it waits) the suite's processes fight over the cores. On
# ml-100k with 8 concurrent clients on 2 cores this alone moved throughput from 126 to 223 req/s and
# p99 from 165 to 64 ms. An explicit value in the caller's environment wins.
SINGLE_THREADED_BLAS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

# grpc.aio's completion queue polled the classic way. grpcio's default EventEngine poller for Python hands
# every completion through one more thread before the event loop sees it; the classic poller took 10-17%
# less CPU per call in a process making three downstream calls per request (bench/hop_bench.py). Python
# services only: tritonserver's own gRPC does not know the experiment. The caller's environment wins.
CLASSIC_GRPC_POLLER = {"GRPC_EXPERIMENTS": "-event_engine_poller_for_python"}


def suite_environment(base: Mapping[str, str]) -> dict[str, str]:
    """For every child: tritonserver and the services."""
    return {**SINGLE_THREADED_BLAS, **base}


def service_environment(base: Mapping[str, str]) -> dict[str, str]:
    """For the suite's Python gRPC services."""
    return {**SINGLE_THREADED_BLAS, **CLASSIC_GRPC_POLLER, **base}
