"""The image (Dockerfile, and its entrypoint script) lints clean and its lock file
(deploy/requirements.lock) is the resolved dependency set of pyproject.toml; these machines
cannot pull base images or build one."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "deploy" / "requirements.lock"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    assert path, f"{name} is a dev dependency (pyproject.toml [dev]); pip install -e '.[dev]'"
    return path


def _pins(text: str) -> dict[str, str]:
    return {
        canonicalize_name(m.group(1)): m.group(2)
        for m in re.finditer(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", text, re.MULTILINE)
    }


def test_dockerfile_lints_clean() -> None:
    result = subprocess.run(
        [_tool("hadolint"), "--failure-threshold", "info", "Dockerfile"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_entrypoint_script_lints_clean() -> None:
    result = subprocess.run(
        [_tool("shellcheck"), "--severity", "style", "deploy/docker-entrypoint.sh"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_as_non_root_from_a_multi_stage_build() -> None:
    text = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.MULTILINE)
    assert stages == ["build", "runtime"]
    runtime = text.split("AS runtime", 1)[1]
    assert re.search(r"^USER\s+10001", runtime, re.MULTILINE)
    # the runtime stage installs nothing: it copies the finished virtualenv
    assert "pip install" not in runtime and "apt-get" not in runtime
    assert "--require-hashes" in text and "deploy/requirements.lock" in text
    entrypoint = (REPO / "deploy" / "docker-entrypoint.sh").read_text()
    for command in ("code-server)", "receiver)", "worker)", "migrate)"):
        assert command in entrypoint


def test_lock_pins_every_dependency_of_pyproject_within_its_range() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = _pins(LOCK.read_text())
    # the image's set: the dependencies and the k8s extra (crm_pipeline/executors.py)
    for line in project["dependencies"] + project["optional-dependencies"]["k8s"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is in pyproject.toml but not in the lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} is outside pyproject's {requirement.specifier}"
        )
    # every pin carries hashes, so `pip install --require-hashes` accepts the file
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", LOCK.read_text().split("\n", 2)[2])
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)


def test_lock_is_the_complete_resolution_of_pyproject() -> None:
    # Resolve pyproject.toml again with the lock as constraints, against the package index (as
    # CI has it): a consistent and complete lock comes back unchanged, pin for pin. A package
    # missing from the lock, or pins that conflict, would show up here.
    result = subprocess.run(
        [
            _tool("uv"),
            "pip",
            "compile",
            "pyproject.toml",
            "--extra",
            "k8s",
            "--python-version",
            "3.11",
            "--python-platform",
            "x86_64-unknown-linux-gnu",
            "--constraint",
            str(LOCK),
            "--no-header",
            "--no-annotate",
            "--quiet",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert _pins(result.stdout) == _pins(LOCK.read_text())
