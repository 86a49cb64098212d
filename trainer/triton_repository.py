"""The Triton model repository inside an artefact version, every config.pbtxt written from tritonclient's
model_config_pb2:

    triton/ranker/config.pbtxt          default: python backend on CPU running model.onnx with onnxruntime
                                        (the nvidia-pytriton wheel's tritonserver has only that backend)
    triton/ranker/configs/gpu.pbtxt     onnxruntime on GPU with TensorRT   (--model-config-name=gpu)
    triton/ranker/configs/gpu-cuda.pbtxt onnxruntime on GPU, CUDA kernels only (--model-config-name=gpu-cuda)
    triton/ranker/1/model.py            imports the python backend's model class (recsys_runtime.triton_models)
    triton/ranker/1/*.npy, *.json       the ranker's weights (the trainer's numpy ranker)
    triton/ranker/1/model.onnx          the same ranker as one ONNX graph (trainer.ranker_onnx): what is served

A deployment picks its configuration by name; all of them serve the same tensors (recsys_runtime.triton_contract).
The serving repository's links to each version's ranker are recsys_runtime.triton_links.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from recsys_runtime import triton_contract as contract
from recsys_runtime.models.ranking import Ranker
from recsys_runtime.triton_contract import CONFIGS_DIR, ONNX_MODEL_FILE
from trainer.ranker_onnx import write_ranker_onnx

MODEL_VERSION = "1"
MODEL_PY = '''"""Triton python-backend entry point; the model lives in the recsys_runtime package."""

from recsys_runtime.triton_models import RankerModel as TritonPythonModel  # noqa: F401
'''

# Deployment configurations: name -> GPU execution accelerator (None: onnxruntime's CUDA provider only).
GPU_CONFIGS: dict[str, str | None] = {"gpu": "tensorrt", "gpu-cuda": None}
# TensorRT engines are built per input shape range and cached here, so a restart does not rebuild them.
TENSORRT_CACHE = "/tmp/recsys-tensorrt-cache"
# Warm-up shapes: TensorRT builds its engine before the model reports ready, not on the first request.
WARMUP_HISTORY = 64
WARMUP_CANDIDATES = 512


def ranker_config(instances: int) -> mc.ModelConfig:
    """Every input and output has a batch dimension of 1 per request ([1, n]). Requests carry candidate lists
    of different lengths, so the inputs allow ragged batches: the dynamic batcher hands concurrent requests
    to one execute() call without padding them to a common shape."""
    # No name: Triton takes the model's directory name, and the serving repository names each version's
    # ranker after its version (triton_contract.served_model_name).
    config = mc.ModelConfig(backend="python", max_batch_size=contract.MAX_BATCH_SIZE)
    for name, (data_type, _) in contract.INPUTS.items():
        config.input.add(name=name, data_type=mc.DataType.Value(data_type), dims=[-1], allow_ragged_batch=True)
    for name, (data_type, _) in contract.OUTPUTS.items():
        config.output.add(name=name, data_type=mc.DataType.Value(data_type), dims=[-1])
    config.dynamic_batching.max_queue_delay_microseconds = contract.MAX_QUEUE_DELAY_US
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=instances)
    return config


def gpu_ranker_config(accelerator: str | None, instances: int = 1) -> mc.ModelConfig:
    """The ONNX ranker on every visible GPU. Its inputs are not ragged: the dynamic batcher groups requests
    of equal shapes, which the ranking service makes common by padding to fixed buckets
    (triton_contract.HISTORY_BUCKET, CANDIDATE_BUCKET)."""
    config = mc.ModelConfig(
        platform="onnxruntime_onnx",
        default_model_filename=ONNX_MODEL_FILE,
        max_batch_size=contract.MAX_BATCH_SIZE,
    )
    for name, (data_type, _) in contract.INPUTS.items():
        config.input.add(name=name, data_type=mc.DataType.Value(data_type), dims=[-1])
    for name, (data_type, _) in contract.OUTPUTS.items():
        config.output.add(name=name, data_type=mc.DataType.Value(data_type), dims=[-1])
    config.dynamic_batching.max_queue_delay_microseconds = contract.MAX_QUEUE_DELAY_US
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=instances)
    if accelerator == "tensorrt":
        tensorrt = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        # FP32: the blend's weights were fitted on FP32 scores; FP16 would reorder close candidates.
        tensorrt.parameters["precision_mode"] = "FP32"
        tensorrt.parameters["max_workspace_size_bytes"] = str(1 << 30)
        tensorrt.parameters["trt_engine_cache_enable"] = "1"
        tensorrt.parameters["trt_engine_cache_path"] = TENSORRT_CACHE
    elif accelerator is not None:
        raise ValueError(f"unknown GPU accelerator {accelerator!r}")
    warmup = config.model_warmup.add(name="padded_request", batch_size=1)
    shapes = {
        contract.HISTORY: WARMUP_HISTORY,
        contract.USER: 1,
        contract.CANDIDATES: WARMUP_CANDIDATES,
        contract.CANDIDATE_SCORES: WARMUP_CANDIDATES,
    }
    for name, (data_type, _) in contract.INPUTS.items():
        warmup.inputs[name].data_type = mc.DataType.Value(data_type)
        warmup.inputs[name].dims.append(shapes[name])
        warmup.inputs[name].zero_data = True
    return config


def write_config(config: mc.ModelConfig, directory: Path, file_name: str = "config.pbtxt") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / file_name
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text_format.MessageToString(config))
    partial.replace(path)
    return path


def read_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def write_ranker(repository: Path, ranker: Ranker, cpu_instances: int) -> Path:
    """The ranker's configurations (`cpu_instances` instances on CPU) and its version directory: model.py
    with the weights it loads, and the ONNX graph. Returns the version directory."""
    model_dir = repository / contract.RANKER_MODEL
    write_config(ranker_config(cpu_instances), model_dir)
    for name, accelerator in GPU_CONFIGS.items():
        write_config(gpu_ranker_config(accelerator), model_dir / CONFIGS_DIR, f"{name}.pbtxt")
    version = model_dir / MODEL_VERSION
    version.mkdir(parents=True, exist_ok=True)
    (version / "model.py").write_text(MODEL_PY)
    ranker.save(version)
    write_ranker_onnx(ranker, version)
    return version
