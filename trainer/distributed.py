"""Multi-worker training with tf.distribute.MultiWorkerMirroredStrategy, configured by TF_CONFIG.

With TF_CONFIG naming more than one task, `setup()` creates the strategy once; every Keras model and optimizer
is then built in `scope()`, `fit` splits each global batch across the workers and all-reduces the gradients,
and the GAN's custom loop runs its steps with `strategy.run`. Without TF_CONFIG (or with a one-task cluster)
`scope()` is a no-op and `replicas()` is 1, so single-process training is exactly what it was.

TF_CONFIG, the standard TensorFlow form, e.g. for the second of two workers:

    {"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 1}}

The chief (the "chief" task if the cluster has one, else worker 0) writes the artefact; the others train in
step with it and write nothing under the output root.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

TF_CONFIG = "TF_CONFIG"


class ClusterError(ValueError):
    """TF_CONFIG is not a cluster specification this trainer can run under."""


@dataclass(frozen=True)
class Cluster:
    workers: int  # tasks taking part in training (chief included)
    task_type: str
    task_index: int
    rank: int  # 0 for the chief, then the workers in order

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


SINGLE = Cluster(workers=1, task_type="worker", task_index=0, rank=0)


def cluster_from_env(environ: Mapping[str, str] | None = None) -> Cluster:
    """The cluster TF_CONFIG describes; SINGLE when it is unset, empty or names one task."""
    text = (os.environ if environ is None else environ).get(TF_CONFIG, "").strip()
    if not text:
        return SINGLE
    try:
        spec = json.loads(text)
        cluster, task = spec.get("cluster") or {}, spec.get("task") or {}
        chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
        task_type, task_index = str(task.get("type", "worker")), int(task.get("index", 0))
    except (ValueError, TypeError, AttributeError) as error:
        raise ClusterError(f"{TF_CONFIG} is not a valid cluster specification: {error}") from error
    if len(chiefs) > 1:
        raise ClusterError(f"{TF_CONFIG}: at most one chief task, got {len(chiefs)}")
    tasks = {"chief": chiefs, "worker": workers}
    if task_type not in tasks:
        raise ClusterError(f"{TF_CONFIG}: task type {task_type!r} is not chief or worker (no parameter servers)")
    if not 0 <= task_index < len(tasks[task_type]):
        raise ClusterError(f"{TF_CONFIG}: no {task_type} task {task_index} in the cluster")
    total = len(chiefs) + len(workers)
    if total <= 1:
        return SINGLE
    rank = 0 if task_type == "chief" else len(chiefs) + task_index
    return Cluster(workers=total, task_type=task_type, task_index=task_index, rank=rank)


_strategy: Any = None
_cluster: Cluster = SINGLE


def setup(environ: Mapping[str, str] | None = None) -> Cluster:
    """Create the multi-worker strategy if TF_CONFIG asks for one (once per process) and return the cluster.

    TensorFlow needs the strategy before any other op runs (it configures the eager context's collectives),
    so `recsys train` calls this first thing."""
    global _strategy, _cluster
    if _strategy is not None:
        return _cluster
    cluster = cluster_from_env(environ)
    if cluster.workers == 1:
        return SINGLE
    if environ is not None:  # the strategy reads the process environment
        os.environ[TF_CONFIG] = environ[TF_CONFIG]
    import tensorflow as tf

    # Ring all-reduce over gRPC: the CPU implementation (NCCL needs GPUs).
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING
    )
    _strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    _cluster = cluster
    _patch_keras()
    return cluster


def _patch_keras() -> None:
    """Two gaps of Keras 3's `fit` under a multi-worker strategy (3.15 here; keras-team/keras#20585, open), each
    fixed by the narrowest change. Installed only by `setup()` under a multi-worker TF_CONFIG: single-process
    training never runs this.

    - Before the first step Keras hands the first distributed batch, an (x, y) structure, to
      `strategy.reduce`, which takes a single value: the build it feeds needs only shapes and dtypes, which
      this worker's own part of the batch gives, with no collective.
    - After every step it averages each logged value with `strategy.reduce(..., axis=0)`, which fails on the
      scalars every step logs (losses, metrics): a scalar is averaged over the workers with axis=None."""
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    def local(value: Any) -> Any:
        if isinstance(value, tf.distribute.DistributedValues):
            return _strategy.experimental_local_results(value)[0]
        return value

    def maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
        if self._distribute_strategy is None:
            return  # not built in a strategy's scope: Keras builds it when tracing the step
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tree.map_structure(local, next(batches))
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    keras_reduce = trainer.reduce_per_replica

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if reduction not in ("auto", "mean"):
            return keras_reduce(values, strategy, reduction)

        def reduce(value: Any) -> Any:
            if tf.is_tensor(local(value)) and local(value).shape.rank == 0:
                return strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
            return keras_reduce(value, strategy, reduction)

        return tree.map_structure(reduce, values)

    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    trainer.reduce_per_replica = reduce_per_replica


def cluster() -> Cluster:
    """The cluster `setup()` joined; SINGLE before it or without TF_CONFIG."""
    return _cluster


def strategy() -> Any:
    """The multi-worker strategy, or None in a single process."""
    return _strategy


def replicas() -> int:
    """Replicas taking part in every step (one per worker here, each on its CPU)."""
    return 1 if _strategy is None else int(_strategy.num_replicas_in_sync)


def scope() -> Any:
    """Where Keras models and optimizers are built: the strategy's scope, or a no-op."""
    return nullcontext() if _strategy is None else _strategy.scope()


def agree(value: float) -> float:
    """The mean of a value over all workers (an all-reduce), so decisions taken on it are the same everywhere:
    early stopping on a validation score must stop every worker at the same epoch, or the ones still training
    wait forever for the others' gradients. The value itself in a single process."""
    if _strategy is None:
        return value
    import tensorflow as tf

    # Each worker's own value, reduced across workers (no replica function needed for a plain tensor).
    return float(_strategy.reduce(tf.distribute.ReduceOp.MEAN, tf.constant(value, tf.float64), axis=None).numpy())


def shard() -> slice:
    """This worker's rows of a table every worker holds in full: every workers-th row from its rank."""
    return slice(_cluster.rank, None, _cluster.workers)
