"""Settings from the environment fail fast, naming every bad variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.settings import EnvReader, ServerSettings, SettingsError


def test_defaults_need_only_the_artefacts(tmp_path: Path) -> None:
    env = EnvReader({"RECSYS_ARTIFACTS": str(tmp_path)})
    settings = ServerSettings.read(env)
    env.finish()
    assert settings.port == 0
    assert settings.host == "127.0.0.1"
    assert settings.artifacts == tmp_path
    assert settings.port_file is None


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    env = EnvReader(
        {
            "RECSYS_ARTIFACTS": str(tmp_path / "missing"),
            "RECSYS_PORT": "http",
            "RECSYS_GRACE_SECONDS": "-1",
            "RECSYS_LOG_LEVEL": "LOUD",
            "RECSYS_MAX_MESSAGE_BYTES": "10",
        }
    )
    ServerSettings.read(env)
    with pytest.raises(SettingsError) as raised:
        env.finish()
    message = str(raised.value)
    for name in ("ARTIFACTS", "PORT='http'", "GRACE_SECONDS", "LOG_LEVEL", "MAX_MESSAGE_BYTES"):
        assert f"RECSYS_{name}" in message


def test_addresses_and_required_values() -> None:
    env = EnvReader({"RECSYS_A": "localhost:50051", "RECSYS_B": "localhost", "RECSYS_C": "host:99999"})
    assert env.address("A") == "localhost:50051"
    env.address("B")
    env.address("C")
    env.address("D")
    assert len(env.problems) == 3
    assert any("RECSYS_D is required" in p for p in env.problems)


def test_a_service_with_bad_settings_exits_at_once_with_code_2(tmp_path: Path) -> None:
    env = {**os.environ, "RECSYS_ARTIFACTS": str(tmp_path), "RECSYS_PORT": "not-a-port"}
    done = subprocess.run(
        [sys.executable, "-m", "services.candidates"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "RECSYS_PORT='not-a-port' is not an integer" in done.stderr
    assert "Traceback" not in done.stderr


def test_gateway_requires_its_dependencies(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.update(RECSYS_ARTIFACTS=str(tmp_path), RECSYS_FEATURES_ADDR="127.0.0.1:1")
    done = subprocess.run(
        [sys.executable, "-m", "services.gateway"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    for name in ("CANDIDATES_ADDR", "RANKING_ADDR", "SYNTHETIC_ADDR"):
        assert f"RECSYS_{name} is required" in done.stderr


def test_suite_environment_sets_one_blas_thread_and_the_classic_grpc_poller_for_services_only() -> None:
    from services.launcher.environment import service_environment, suite_environment

    services = service_environment({"PATH": "/bin"})
    assert services["OPENBLAS_NUM_THREADS"] == "1"
    assert services["GRPC_EXPERIMENTS"] == "-event_engine_poller_for_python"
    assert "GRPC_EXPERIMENTS" not in suite_environment({"PATH": "/bin"})  # tritonserver's gRPC lacks it
    # The caller's own values win.
    mine = service_environment({"GRPC_EXPERIMENTS": "", "OPENBLAS_NUM_THREADS": "4"})
    assert mine["GRPC_EXPERIMENTS"] == "" and mine["OPENBLAS_NUM_THREADS"] == "4"
