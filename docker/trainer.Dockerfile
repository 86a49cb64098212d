# syntax=docker/dockerfile:1.7
# The trainer image: `recsys train` (TensorFlow on CPU) and docker/train_worker.py, which builds TF_CONFIG
# for one pod of the Indexed Job in deploy/training. Build from the repository root:
#   docker build -f docker/trainer.Dockerfile -t recsys-trainer:0.1.0 .
# Pin by digest in production: FROM python:3.11.11-slim-bookworm@sha256:<digest>

# ---- builder --------------------------------------------------------------------------------------------
FROM python:3.11.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

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
RUN pip install -c constraints.txt ".[train]"

# ---- runtime --------------------------------------------------------------------------------------------
FROM python:3.11.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="recsys-trainer" \
      org.opencontainers.image.description="recsys trainer: recsys train, one process or a MultiWorkerMirroredStrategy worker" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 recsys \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin recsys

COPY --from=builder /opt/venv /opt/venv
COPY docker/train_worker.py /opt/recsys/train_worker.py

# Read-only root filesystem in the cluster: scratch space is /tmp (an emptyDir), artefacts go to /artifacts.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    TF_CPP_MIN_LOG_LEVEL=1

USER 10001:10001
WORKDIR /tmp
# The TensorFlow collective port the workers of a multi-worker job reach each other on.
EXPOSE 2222

CMD ["recsys", "train", "--help"]
