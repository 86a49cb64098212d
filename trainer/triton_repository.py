"""The Triton model repository inside an artefact version: config.pbtxt written from tritonclient's
model_config_pb2, and the python-backend model that runs the ranking models on CPU.

    triton/ranker/config.pbtxt
    triton/ranker/1/model.py        imports the model class from this package
    triton/ranker/1/*.npy, *.json   the weights it serves
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from trainer import triton_contract as contract

MODEL_VERSION = "1"
MODEL_PY = '''"""Triton python-backend entry point; the model lives in the recsys package."""

from trainer.triton_models import RankerModel as TritonPythonModel  # noqa: F401
'''


def ranker_config(instances: int = 1) -> mc.ModelConfig:
    """Every input and output has a batch dimension of 1 per request ([1, n]). Requests carry candidate lists
    of different lengths, so the inputs allow ragged batches: the dynamic batcher hands concurrent requests
    to one execute() call without padding them to a common shape."""
    config = mc.ModelConfig(name=contract.RANKER_MODEL, backend="python", max_batch_size=contract.MAX_BATCH_SIZE)
    for name, (data_type, _) in contract.INPUTS.items():
        config.input.add(name=name, data_type=mc.DataType.Value(data_type), dims=[-1], allow_ragged_batch=True)
    for name, (data_type, _) in contract.OUTPUTS.items():
        config.output.add(name=name, data_type=mc.DataType.Value(data_type), dims=[-1])
    config.dynamic_batching.max_queue_delay_microseconds = contract.MAX_QUEUE_DELAY_US
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=instances)
    return config


def write_config(config: mc.ModelConfig, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.pbtxt"
    path.write_text(text_format.MessageToString(config))
    return path


def read_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def write_ranker(repository: Path) -> Path:
    """The ranker's config and version directory (with model.py); returns the version directory, where the
    caller writes the weights."""
    model_dir = repository / contract.RANKER_MODEL
    write_config(ranker_config(), model_dir)
    version = model_dir / MODEL_VERSION
    version.mkdir(parents=True, exist_ok=True)
    (version / "model.py").write_text(MODEL_PY)
    return version
