"""services/common/service.ArtifactService following an artefact root while it serves."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from recsys_runtime.artifacts import ArtifactError, publish, staging_directory, switch_current
from services.common.artifacts import ArtifactVersion
from services.common.service import ArtifactService
from services.common.settings import ServerSettings


def make_version(root: Path, version: str, content: bytes = b"weights") -> None:
    with staging_directory(root, version) as staging:
        (staging / "model.bin").write_bytes(content)
        publish(staging, root, version, {"config": {}})


def settings(root: Path, poll_s: float) -> ServerSettings:
    return ServerSettings(
        host="127.0.0.1",
        port=0,
        artifacts=root,
        log_level="INFO",
        max_message_bytes=1 << 20,
        grace_seconds=0.0,
        max_concurrent_rpcs=8,
        metrics_port=-1,
        reload_poll_s=poll_s,
        port_file=None,
    )


@dataclass
class Core:
    version: str


class Servicer:
    core: Any = None


def reloads(outcome: str) -> float:
    return REGISTRY.get_sample_value("recsys_model_reloads_total", {"service": "unknown", "outcome": outcome}) or 0.0


def fallback(current: str) -> float | None:
    """recsys_artifact_fallback for `current`: 1 serving another version in its place, 0 serving it, None: neither."""
    return REGISTRY.get_sample_value("recsys_artifact_fallback", {"service": "unknown", "current": current})


async def wait_for(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def build(artifacts: ArtifactVersion) -> Core:
    if (artifacts.path / "model.bin").read_bytes() == b"broken":
        raise ValueError("cannot load these weights")
    await asyncio.sleep(0.05)  # a build takes time; requests meanwhile see the old core
    return Core(artifacts.version)


def service(root: Path, poll_s: float, switches: list[tuple[str | None, str]]) -> ArtifactService:
    async def after_switch(old: Core | None, new: Core) -> None:
        switches.append((old.version if old else None, new.version))

    return ArtifactService(
        "test", settings(root, poll_s), Servicer(), lambda server: None, build, after_switch=after_switch
    )


async def test_follows_current_and_survives_a_broken_version(tmp_path: Path) -> None:
    make_version(tmp_path, "v1")
    switches: list[tuple[str | None, str]] = []
    svc = service(tmp_path, 0.02, switches)
    await svc.start()
    try:
        assert svc.servicer.core.version == "v1" and switches == [(None, "v1")]
        switched, failed = reloads("switched"), reloads("failed")

        make_version(tmp_path, "v2")  # publish flips `current`
        await wait_for(lambda: svc.servicer.core.version == "v2")
        assert switches[-1] == ("v1", "v2") and reloads("switched") == switched + 1

        # A version whose models fail to load: refused, counted once, and the old core goes on serving.
        make_version(tmp_path, "v3", b"broken")
        await wait_for(lambda: reloads("failed") == failed + 1)
        await asyncio.sleep(0.2)  # several polls: the refused version is not retried in a loop
        assert reloads("failed") == failed + 1
        assert svc.servicer.core.version == "v2" and svc.serving is not None and svc.serving.version == "v2"

        # A version whose files no longer match their checksums is refused before any model reads it.
        make_version(tmp_path, "v4")
        await wait_for(lambda: svc.servicer.core.version == "v4")
        (tmp_path / "v2" / "model.bin").write_bytes(b"tampered")
        switch_current(tmp_path, "v2")
        await wait_for(lambda: reloads("failed") == failed + 2)
        assert svc.servicer.core.version == "v4"

        switch_current(tmp_path, "v1")  # a rollback
        await wait_for(lambda: svc.servicer.core.version == "v1")
        assert switches[-1] == ("v4", "v1")
    finally:
        await svc.close()


async def test_a_pinned_version_or_poll_zero_never_switches(tmp_path: Path) -> None:
    make_version(tmp_path, "v1")
    switches: list[tuple[str | None, str]] = []
    pinned = ArtifactService("test", settings(tmp_path / "v1", 0.02), Servicer(), lambda server: None, build)
    never = service(tmp_path, 0, switches)
    await pinned.start()
    await never.start()
    try:
        make_version(tmp_path, "v2")
        await asyncio.sleep(0.2)
        assert pinned.servicer.core.version == "v1" and never.servicer.core.version == "v1"
    finally:
        await pinned.close()
        await never.close()


@pytest.mark.parametrize("breakage", ["checksum", "dangling"])
async def test_starts_on_the_last_verified_version_when_current_is_bad(tmp_path: Path, breakage: str) -> None:
    make_version(tmp_path, "v1")
    make_version(tmp_path, "v2")
    if breakage == "checksum":
        (tmp_path / "v2" / "model.bin").write_bytes(b"tampered")
    else:  # `current` names a version that is gone
        (tmp_path / "v2").rename(tmp_path / ".v2-removed")
    switches: list[tuple[str | None, str]] = []
    svc = service(tmp_path, 0.02, switches)
    failed = reloads("failed")
    await svc.start()
    try:
        assert svc.servicer.core.version == "v1" and switches == [(None, "v1")]
        assert svc.serving is not None and svc.serving.stands_in_for == tmp_path / "v2"
        assert fallback("v2") == 1.0
        assert REGISTRY.get_sample_value("recsys_model_version", {"service": "unknown", "version": "v1"}) == 1.0

        await asyncio.sleep(0.2)  # several polls: the `current` refused at start is not retried in a loop
        assert reloads("failed") == failed and svc.servicer.core.version == "v1"

        make_version(tmp_path, "v3")  # a good version: followed as usual, and the fallback is over
        await wait_for(lambda: svc.servicer.core.version == "v3")
        assert fallback("v3") == 0.0 and fallback("v2") is None
        assert svc.serving is not None and svc.serving.stands_in_for is None
    finally:
        await svc.close()


async def test_a_failed_switch_is_shown_until_current_names_the_serving_version_again(tmp_path: Path) -> None:
    make_version(tmp_path, "v1")
    svc = service(tmp_path, 0.02, [])
    await svc.start()
    try:
        assert fallback("v1") == 0.0
        make_version(tmp_path, "v2", b"broken")
        await wait_for(lambda: fallback("v2") == 1.0)
        assert svc.servicer.core.version == "v1"
        switch_current(tmp_path, "v1")  # the operator rolls back to what is serving
        await wait_for(lambda: fallback("v1") == 0.0)
        assert fallback("v2") is None and svc.serving is not None and svc.serving.stands_in_for is None
    finally:
        await svc.close()


async def test_start_fails_naming_every_version_when_none_verifies(tmp_path: Path) -> None:
    make_version(tmp_path, "v1")
    make_version(tmp_path, "v2")
    for version in ("v1", "v2"):
        (tmp_path / version / "model.bin").write_bytes(b"tampered")
    svc = service(tmp_path, 0.02, [])
    with pytest.raises(ArtifactError, match=r"no artefact version verifies; tried v2 \(.*\); v1 \(.*\)"):
        await svc.start()
    assert svc.serving is None


@pytest.mark.parametrize("poll_ms", ["-1", "x"])
def test_reload_poll_setting_is_validated(poll_ms: str) -> None:
    from services.common.settings import EnvReader, SettingsError

    env = EnvReader({"RECSYS_ARTIFACTS": "/", "RECSYS_RELOAD_POLL_MS": poll_ms})
    with pytest.raises(SettingsError, match="RELOAD_POLL_MS"):
        ServerSettings.read(env)
        env.finish()
