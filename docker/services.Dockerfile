# syntax=docker/dockerfile:1.7
# The services image: every gRPC service (`python -m services.<name>`) and, for CPU clusters, the
# tritonserver binary of the nvidia-pytriton wheel (docker/triton_cpu.py). Build from the repository root:
#   docker build -f docker/services.Dockerfile -t recsys-services:0.1.0 .
# Pin by digest in production: FROM python:3.11.11-slim-bookworm@sha256:<digest>
# (`docker buildx imagetools inspect python:3.11.11-slim-bookworm` prints it).

# ---- builder: compilers and pip, none of which reach the final image ------------------------------------
FROM python:3.11.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# A compiler for any dependency without a wheel for this platform.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY protos/ protos/
COPY recsys_runtime/ recsys_runtime/
COPY services/ services/
COPY trainer/ trainer/
# The exact dependency set the tests ran with (constraints.txt), the project itself not editable, serving
# dependencies only: no TensorFlow, ONNX or matplotlib (the services import recsys_runtime, never the
# trainer). pip compiles the bytecode, so nothing needs writing at run time (the root filesystem is read-only).
RUN pip install -c constraints.txt ".[serve]"

# ---- runtime: the interpreter, the virtual environment, a non-root user ---------------------------------
FROM python:3.11.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="recsys-services" \
      org.opencontainers.image.description="recsys gRPC services (gateway, features, candidates, ranking, synthetic)" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 recsys \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin recsys

COPY --from=builder /opt/venv /opt/venv
COPY docker/triton_cpu.py /opt/recsys/triton_cpu.py

# The root filesystem is read-only in the cluster: everything that writes goes to /tmp (an emptyDir).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    RECSYS_HOST=0.0.0.0 \
    RECSYS_PORT=50051 \
    RECSYS_METRICS_PORT=9090 \
    RECSYS_ARTIFACTS=/artifacts

USER 10001:10001
WORKDIR /tmp
EXPOSE 50051 9090

# Deployments name the service in their command: python -m services.<name>
CMD ["python", "-m", "services.gateway"]
