"""Entry point of one worker of the multi-worker training Job (deploy/training): builds TF_CONFIG for this pod,
waits until every worker's name resolves, then runs the training command in its place.

    python /opt/recsys/train_worker.py recsys train --movielens /data/ml-1m --out /artifacts
    python /opt/recsys/train_worker.py --print-tf-config          # the TF_CONFIG this pod would get

An Indexed Job gives every pod JOB_COMPLETION_INDEX (0..N-1) and the hostname <job>-<index>; with the pod's
subdomain set to a headless Service, <job>-<index>.<service>.<namespace>.svc resolves to that pod. Worker 0
is the chief (MultiWorkerMirroredStrategy's convention when the cluster has no "chief" task).

Environment (the Job sets all of them; JOB_COMPLETION_INDEX comes from Kubernetes):
    JOB_COMPLETION_INDEX       this worker's index
    RECSYS_TRAIN_WORKERS       N, the Job's completions and parallelism
    RECSYS_TRAIN_JOB           the Job's name (the pods' hostname prefix)
    RECSYS_TRAIN_SERVICE       the headless Service, also the pods' subdomain
    RECSYS_TRAIN_NAMESPACE     the namespace
    RECSYS_TRAIN_PORT          the port workers reach each other on (default 2222)
    RECSYS_TRAIN_DNS_WAIT_S    how long to wait for every worker's name to resolve (default 300; 0: no wait)

With one worker, TF_CONFIG is left unset and training runs as one process. A TF_CONFIG already in the
environment is kept as it is.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence

PRINT_FLAG = "--print-tf-config"
DEFAULT_PORT = 2222
DEFAULT_DNS_WAIT_S = 300.0


class ConfigError(ValueError):
    """The pod's environment does not describe a worker of the training Job."""


def _required(env: Mapping[str, str], key: str) -> str:
    value = env.get(key, "").strip()
    if not value:
        raise ConfigError(f"{key} is not set")
    return value


def _integer(env: Mapping[str, str], key: str, default: int | None = None) -> int:
    raw = env.get(key, "").strip()
    if not raw and default is not None:
        return default
    try:
        return int(_required(env, key))
    except ValueError as error:
        raise ConfigError(f"{key}={raw!r} is not an integer") from error


def worker_hosts(env: Mapping[str, str]) -> list[str]:
    """host:port of every worker, index order: <job>-<i>.<service>.<namespace>.svc:<port>."""
    workers = _integer(env, "RECSYS_TRAIN_WORKERS")
    if workers < 1:
        raise ConfigError(f"RECSYS_TRAIN_WORKERS={workers} is not a positive worker count")
    job = _required(env, "RECSYS_TRAIN_JOB")
    service = _required(env, "RECSYS_TRAIN_SERVICE")
    namespace = _required(env, "RECSYS_TRAIN_NAMESPACE")
    port = _integer(env, "RECSYS_TRAIN_PORT", DEFAULT_PORT)
    if not 0 < port < 65536:
        raise ConfigError(f"RECSYS_TRAIN_PORT={port} is not a port")
    return [f"{job}-{index}.{service}.{namespace}.svc:{port}" for index in range(workers)]


def tf_config(env: Mapping[str, str]) -> dict[str, object] | None:
    """The TF_CONFIG of this pod; None when the Job has one worker (plain single-process training)."""
    hosts = worker_hosts(env)
    index = _integer(env, "JOB_COMPLETION_INDEX")
    if not 0 <= index < len(hosts):
        raise ConfigError(f"JOB_COMPLETION_INDEX={index} is outside 0..{len(hosts) - 1}")
    if len(hosts) == 1:
        return None
    return {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}


def wait_for_names(
    hosts: Sequence[str],
    timeout_s: float,
    resolve: Callable[[str], object] = socket.gethostbyname,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[str]:
    """Wait until every worker's name resolves (pods start at different times, and a name exists only once its
    pod does); returns the names still unresolved at the deadline."""
    pending = [host.rpartition(":")[0] for host in hosts]
    deadline = clock() + timeout_s
    while True:
        still: list[str] = []
        for name in pending:
            try:
                resolve(name)
            except (OSError, UnicodeError):  # UnicodeError: a label longer than DNS allows
                still.append(name)
        pending = still
        if not pending or clock() >= deadline:
            return pending
        sleep(min(2.0, max(0.0, deadline - clock())))


def main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    command = list(argv[1:])
    printing = command[:1] == [PRINT_FLAG]
    if not command:
        print(f"usage: {argv[0]} COMMAND [ARGS...] | {PRINT_FLAG}", file=sys.stderr)
        return 2
    child_env = dict(env)
    if "TF_CONFIG" not in env:
        try:
            config = tf_config(env)
        except ConfigError as error:
            print(f"train_worker: {error}", file=sys.stderr)
            return 2
        if config is not None:
            child_env["TF_CONFIG"] = json.dumps(config, separators=(",", ":"))
            if not printing:
                wait_s = float(env.get("RECSYS_TRAIN_DNS_WAIT_S", "") or DEFAULT_DNS_WAIT_S)
                cluster = config["cluster"]
                assert isinstance(cluster, dict)
                missing = wait_for_names(cluster["worker"], wait_s)
                if missing:
                    print(f"train_worker: still unresolved after {wait_s:.0f}s: {', '.join(missing)}", file=sys.stderr)
                    return 1
    if printing:
        print(child_env.get("TF_CONFIG", ""))
        return 0
    sys.stdout.flush()
    os.execvpe(command[0], command, child_env)
    return 127  # not reached: exec replaces this process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv, os.environ))
