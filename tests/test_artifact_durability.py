"""Artefact versions survive a power cut (every file and directory is flushed before `current` moves), and a bad
`current` does not keep anything from starting: the last version that verifies is served instead."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from recsys_runtime import artifacts
from recsys_runtime.artifacts import CURRENT, MANIFEST, ArtifactError, publish, staging_directory, switch_current
from recsys_runtime.triton_contract import served_model_name
from services.common.artifacts import open_artifacts
from services.launcher.supervisor import LaunchError, Suite
from tests.test_cli import invoke, text

FILES = {"a.txt": b"one", "nested/deeper/b.bin": b"\x00\x01\x02", "nested/c.json": b"{}"}
V1, V2, V3 = "20240101-000000-aaaaaa", "20240102-000000-aaaaaa", "20240103-000000-aaaaaa"

Event = tuple[str, ...]


def make_version(root: Path, version: str, files: dict[str, bytes] | None = None) -> Path:
    with staging_directory(root, version) as staging:
        for name, content in (files or FILES).items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(content)
        return publish(staging, root, version, {"config": {}})


@pytest.fixture
def syscalls(monkeypatch: pytest.MonkeyPatch) -> list[Event]:
    """fsync, rename and replace as they happen, in order: ("fsync", path) names the file or directory the
    descriptor refers to (read back from /proc), ("rename"/"replace", source, destination)."""
    events: list[Event] = []
    fsync, rename, replace = os.fsync, os.rename, os.replace

    def record_fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def recording(kind: str, call: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
        def record(source: Any, destination: Any) -> None:
            events.append((kind, str(source), str(destination)))
            call(source, destination)

        return record

    monkeypatch.setattr(os, "fsync", record_fsync)
    monkeypatch.setattr(os, "rename", recording("rename", rename))
    monkeypatch.setattr(os, "replace", recording("replace", replace))
    return events


def position(events: list[Event], event: Event) -> int:
    assert event in events, f"{event} never happened: {events}"
    return events.index(event)


def last_position(events: list[Event], event: Event) -> int:
    position(events, event)
    return len(events) - 1 - events[::-1].index(event)


# --- durability ---------------------------------------------------------------------------------------------------


def test_publish_flushes_files_directories_and_root_before_current_moves(tmp_path: Path, syscalls: list[Event]) -> None:
    root = tmp_path.resolve() / "root"
    make_version(root, V1)
    staging, final = root / f".staging-{V1}", root / V1
    renamed = position(syscalls, ("rename", str(staging), str(final)))
    moved = position(syscalls, ("replace", *next(e[1:] for e in syscalls if e[-1] == str(root / CURRENT))))
    assert renamed < moved

    # Every file of the version reached the disk under its staging name, before the directory was renamed.
    for name in FILES:
        assert position(syscalls, ("fsync", str(staging / name))) < renamed
    # The manifest: its temporary file flushed before it was renamed into place, then its directory.
    manifest_placed = next(i for i, e in enumerate(syscalls) if e[0] == "replace" and e[2] == str(staging / MANIFEST))
    manifest_tmp = syscalls[manifest_placed][1]
    assert position(syscalls, ("fsync", manifest_tmp)) < manifest_placed
    assert manifest_placed < last_position(syscalls, ("fsync", str(staging))) < renamed
    # Every directory inside the version, deepest first.
    deeper, nested = (position(syscalls, ("fsync", str(staging / d))) for d in ("nested/deeper", "nested"))
    assert deeper < nested < renamed
    # The rename itself is on disk before `current` names the version, and so is the switch afterwards.
    assert any(syscalls[i] == ("fsync", str(root)) for i in range(renamed + 1, moved))
    assert last_position(syscalls, ("fsync", str(root))) > moved


def test_switch_current_flushes_the_root_after_the_link_moves(tmp_path: Path, syscalls: list[Event]) -> None:
    root = tmp_path.resolve()
    make_version(root, V1)
    make_version(root, V2)
    syscalls.clear()
    switch_current(root, V1)  # a rollback
    moved = next(i for i, e in enumerate(syscalls) if e[0] == "replace" and e[2] == str(root / CURRENT))
    assert ("fsync", str(root)) in syscalls[moved + 1 :]
    assert os.readlink(root / CURRENT) == V1


def test_the_served_ranker_link_is_flushed_after_it_moves(tmp_path: Path, syscalls: list[Event]) -> None:
    from recsys_runtime.triton_contract import SERVING_REPOSITORY_DIR
    from recsys_runtime.triton_links import link_served_version

    root = tmp_path.resolve()
    link = link_served_version(root, V1)
    placed = next(i for i, e in enumerate(syscalls) if e[0] == "replace" and e[2] == str(link))
    assert ("fsync", str(root / SERVING_REPOSITORY_DIR)) in syscalls[placed + 1 :]


def test_write_json_atomic_flushes_the_file_then_its_directory(tmp_path: Path, syscalls: list[Event]) -> None:
    path = tmp_path.resolve() / "state.json"
    artifacts.write_json_atomic(path, {"a": 1})
    placed = next(i for i, e in enumerate(syscalls) if e[0] == "replace" and e[2] == str(path))
    assert position(syscalls, ("fsync", syscalls[placed][1])) < placed
    assert ("fsync", str(path.parent)) in syscalls[placed + 1 :]
    assert path.read_text() == '{\n "a": 1\n}'


# --- falling back from a bad `current` ----------------------------------------------------------------------------


def tamper(root: Path, version: str) -> None:
    (root / version / "a.txt").write_bytes(b"tampered")


def remove(root: Path, version: str) -> None:
    os.replace(root / version, root / f".removed-{version}")  # hidden names are not versions


def dangle(root: Path) -> None:
    switch_current(root, V2)
    remove(root, V2)


BREAKAGES: dict[str, Callable[[Path], None]] = {
    "checksum": lambda root: tamper(root, V3),
    "missing file": lambda root: (root / V3 / "nested" / "c.json").unlink(),
    "missing manifest": lambda root: (root / V3 / MANIFEST).unlink(),
    "torn manifest": lambda root: (root / V3 / MANIFEST).write_text('{"format": 2, "fil'),
    "dangling link": dangle,  # to V2: the fallback is V1, older than what `current` names, not V3
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_a_bad_current_falls_back_to_the_newest_older_version_that_verifies(tmp_path: Path, breakage: str) -> None:
    for version in (V1, V2, V3):
        make_version(tmp_path, version)
    BREAKAGES[breakage](tmp_path)
    wanted = V2 if breakage == "dangling link" else V3
    expected = V1 if breakage == "dangling link" else V2

    verified = artifacts.open_verified_version(tmp_path)
    assert verified.version == expected and verified.path == tmp_path / expected
    assert [r.version for r in verified.refused] == [wanted] and verified.wanted == tmp_path / wanted
    assert verified.manifest["files"].keys() == FILES.keys()

    # What a service opens: the same version, and which one it stands in for.
    opened = open_artifacts(tmp_path)
    assert opened.version == expected and opened.stands_in_for == tmp_path / wanted


def test_current_that_verifies_is_served_without_fallback(tmp_path: Path) -> None:
    make_version(tmp_path, V1)
    make_version(tmp_path, V2)
    switch_current(tmp_path, V1)  # name order does not matter: `current` does
    verified = artifacts.open_verified_version(tmp_path)
    assert verified.version == V1 and verified.refused == () and verified.wanted == tmp_path / V1
    assert open_artifacts(tmp_path).stands_in_for is None


def test_fallback_prefers_older_versions_then_newer_ones(tmp_path: Path) -> None:
    for version in (V1, V2, V3):
        make_version(tmp_path, version)
    switch_current(tmp_path, V2)  # rolled back from V3
    tamper(tmp_path, V2)
    assert artifacts.open_verified_version(tmp_path).version == V1  # what V2 replaced, not what replaced it
    tamper(tmp_path, V1)
    verified = artifacts.open_verified_version(tmp_path)
    assert verified.version == V3 and [r.version for r in verified.refused] == [V2, V1]


def test_without_current_the_newest_version_that_verifies_is_served(tmp_path: Path) -> None:
    make_version(tmp_path, V1)
    make_version(tmp_path, V2)
    (tmp_path / CURRENT).unlink()
    tamper(tmp_path, V2)
    verified = artifacts.open_verified_version(tmp_path)
    assert verified.version == V1 and verified.wanted == tmp_path / V2


def test_when_nothing_verifies_the_error_names_every_version_tried(tmp_path: Path) -> None:
    for version in (V1, V2, V3):
        make_version(tmp_path, version)
    tamper(tmp_path, V1)
    (tmp_path / V2 / MANIFEST).write_text("not json")
    remove(tmp_path, V3)  # `current` dangles
    with pytest.raises(ArtifactError, match="no artefact version verifies") as refused:
        artifacts.open_verified_version(tmp_path)
    message = str(refused.value)
    assert f"{V3} (does not exist)" in message
    assert f"{V2} (manifest.json is unreadable" in message
    assert f"{V1} (a.txt does not match its checksum)" in message
    assert message.index(V3) < message.index(V2) < message.index(V1)  # in the order tried


def test_a_pinned_version_is_served_as_it_is_or_not_at_all(tmp_path: Path) -> None:
    make_version(tmp_path, V1)
    make_version(tmp_path, V2)
    tamper(tmp_path, V2)
    with pytest.raises(ArtifactError, match=r"a\.txt does not match its checksum"):
        artifacts.open_verified_version(tmp_path / V2)
    assert artifacts.open_verified_version(tmp_path / V1).refused == ()


def test_an_empty_root_still_says_to_train(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no artefact version found"):
        artifacts.open_verified_version(tmp_path)


# --- the launcher -------------------------------------------------------------------------------------------------


def test_launcher_starts_triton_on_the_version_the_services_fall_back_to(tmp_path: Path) -> None:
    make_version(tmp_path, V1)
    make_version(tmp_path, V2)
    tamper(tmp_path, V2)
    assert Suite(artifacts=tmp_path)._served_model() == served_model_name(V1)
    tamper(tmp_path, V1)
    with pytest.raises(LaunchError, match="no artefact version verifies"):
        Suite(artifacts=tmp_path)._served_model()


def test_serve_prints_the_fallback_and_checks_the_fallback_versions_triton_config(tmp_path: Path) -> None:
    make_version(tmp_path, V1)
    make_version(tmp_path, V2)
    tamper(tmp_path, V2)
    # An unknown --triton-config stops `serve` right after the version is resolved, before any process starts.
    result = invoke("serve", "--artifacts", tmp_path, "--port", "0", "--triton-config", "tpu")
    assert result.exit_code == 2, result.output
    output = text(result)
    assert f"warning: `current` ({V2}) does not verify; serving {V1}, the last version that does" in output
    assert "a.txt does not match its checksum" in output
    assert "--triton-config 'tpu'" in output
