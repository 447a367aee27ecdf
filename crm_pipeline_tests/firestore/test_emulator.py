"""Emulator management: actionable errors when it is missing, a clean start and stop."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from crm_pipeline.firestore import emulator as emulator_module
from crm_pipeline.firestore.emulator import (
    FirestoreEmulator,
    FirestoreEmulatorError,
    find_emulator_jar,
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
        assert httpx.get(f"http://{host}/").status_code == 200
    assert not emulator.running
    assert emulator.log_file.exists()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{host}/", timeout=2)
