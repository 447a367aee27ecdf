"""Emulator management: actionable errors when it is missing, a clean start and stop."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crm_pipeline.firestore import emulator as emulator_module
from crm_pipeline.firestore.emulator import (
    HEAP_ENV,
    HEAP_FLOOR_MB,
    FirestoreEmulator,
    FirestoreEmulatorError,
    find_emulator_jar,
    heap_for,
)


def test_missing_jar_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CRM_FIRESTORE_EMULATOR_JAR", str(tmp_path / "nope.jar"))
    monkeypatch.setattr(emulator_module, "DEFAULT_JAR", tmp_path / "also-missing.jar")
    monkeypatch.setattr(emulator_module.shutil, "which", lambda name: None)
    with pytest.raises(FirestoreEmulatorError) as info:
        find_emulator_jar()
    message = str(info.value)
    assert "google-cloud-cli-firestore-emulator" in message
    assert "gcloud components install cloud-firestore-emulator" in message


def test_missing_java_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAVA", "/nonexistent/java")
    monkeypatch.setattr(emulator_module, "JAVA17_CANDIDATES", ())
    monkeypatch.setattr(emulator_module.shutil, "which", lambda name: None)
    with pytest.raises(FirestoreEmulatorError, match="openjdk-17-jre-headless"):
        emulator_module.find_java()


def test_start_and_stop(tmp_path: Path) -> None:
    emulator = FirestoreEmulator(tmp_path)
    with emulator as host:
        assert host == emulator.host and emulator.running
        cmdline = Path(f"/proc/{emulator.pid}/cmdline").read_bytes().split(b"\0")
        assert f"-Xmx{HEAP_FLOOR_MB}m".encode() in cmdline
        assert httpx.get(f"http://{host}/").status_code == 200
    assert not emulator.running
    assert emulator.log_file.exists()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{host}/", timeout=2)


@given(st.integers(-10, 2_000_000), st.integers(0, 1_000_000))
def test_heap_grows_with_the_store_from_a_floor(customers: int, more: int) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(HEAP_ENV, raising=False)
        heap = heap_for(customers)
        assert heap >= HEAP_FLOOR_MB and heap % 256 == 0
        assert heap_for(customers + more) >= heap


def test_heap_sizes_the_stores_that_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HEAP_ENV, raising=False)
    assert heap_for(0) == heap_for(3_000) == HEAP_FLOOR_MB
    assert heap_for(100_000) > 4 * 768  # 768 MB died with "Java heap space" at 100k
    assert heap_for(1_000_000) > 8 * heap_for(100_000) // 2
    monkeypatch.setenv(HEAP_ENV, "6000")
    assert heap_for(10) == 6000


def test_java_command_carries_the_heap(tmp_path: Path) -> None:
    emulator = FirestoreEmulator(tmp_path, port=8123, heap_mb=heap_for(100_000))
    cmd = emulator.command("java", tmp_path / "emulator.jar")
    assert cmd[0] == "java" and f"-Xmx{heap_for(100_000)}m" in cmd
    assert cmd.index(f"-Xmx{heap_for(100_000)}m") < cmd.index("-cp")
