"""Start and stop the official Cloud Firestore emulator (a Java jar) for the demo, tests and bench.

The jar ships in the `google-cloud-cli-firestore-emulator` Debian package (or
`gcloud components install cloud-firestore-emulator`). It has no Main-Class in its manifest, so we
run its main class with `java -cp`, as Google's own `cloud_firestore_emulator` wrapper does. It
needs Java 17 or newer. We bind to 127.0.0.1 on a free port so parallel test sessions and the demo
never collide, and run it in its own process group so stop() also reaps its helper threads'
children and nothing outlives us.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from crm_pipeline.child_processes import die_with_parent, signal_group

log = logging.getLogger(__name__)

JAR_ENV = "CRM_FIRESTORE_EMULATOR_JAR"
JAVA_ENV = "JAVA"
DEFAULT_JAR = Path(
    "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
)
MAIN_CLASS = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
JAVA17_CANDIDATES = (
    Path("/usr/lib/jvm/java-17-openjdk-amd64/bin/java"),
    Path("/usr/lib/jvm/java-17-openjdk-arm64/bin/java"),
)
INSTALL_HINT = (
    "Install the Firestore emulator: `apt-get install google-cloud-cli-firestore-emulator` "
    "(Debian/Ubuntu with Google's apt repository) or `gcloud components install "
    "cloud-firestore-emulator`; or point CRM_FIRESTORE_EMULATOR_JAR at "
    "cloud-firestore-emulator.jar."
)
JAVA_HINT = (
    "The Firestore emulator needs Java 17 or newer: `apt-get install openjdk-17-jre-headless`, "
    "or set JAVA to a java binary."
)


# The emulator keeps every document in the JVM heap: about 6 documents per customer (customer,
# addresses, orders, activities). 768 MB died with "Java heap space" at 100k customers, and the
# consistency check at 20k thrashed a 4 GB heap. docs/firestore-mirror.md states the rule.
HEAP_FLOOR_MB = 1024
HEAP_MB_PER_1000_CUSTOMERS = 160
HEAP_ENV = "CRM_FIRESTORE_EMULATOR_HEAP_MB"
# where the emulator that owns a host logs, for errors raised in this process (firestore/lost.py)
LOG_FILES: dict[str, Path] = {}


def heap_for(customers: int) -> int:
    """The emulator's JVM heap in MB for a store of `customers`: 160 MB per 1,000 customers
    (100k: 15.6 GB) rounded up to 256 MB, never below a 1 GB floor (up to 6.4k customers).
    The mirror holds each customer's orders, activities and notes too (~15 documents per
    generated customer): a 1 GB heap spent 1,300 s of 1,350 s in full GCs at 10k customers
    (bench_scale, 2026-12-02; the old 32 MB per 1,000 predates the history subcollections).
    CRM_FIRESTORE_EMULATOR_HEAP_MB overrides it (a machine with less memory, or a store much
    richer than the generator's)."""
    override = os.environ.get(HEAP_ENV)
    if override:
        return int(override)
    wanted = max(0, customers) * HEAP_MB_PER_1000_CUSTOMERS / 1000
    return max(HEAP_FLOOR_MB, -(-int(wanted) // 256) * 256)


class FirestoreEmulatorError(RuntimeError):
    """The emulator is not installed, or did not start or answer in time."""


def find_emulator_jar() -> Path:
    """The emulator jar: CRM_FIRESTORE_EMULATOR_JAR, the Debian package path, or gcloud's SDK."""
    candidates: list[Path] = []
    if os.environ.get(JAR_ENV):
        candidates.append(Path(os.environ[JAR_ENV]).expanduser())
    candidates.append(DEFAULT_JAR)
    gcloud = shutil.which("gcloud")
    if gcloud:
        sdk_root = Path(gcloud).resolve().parent.parent
        candidates.append(
            sdk_root / "platform" / "cloud-firestore-emulator" / "cloud-firestore-emulator.jar"
        )
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise FirestoreEmulatorError(
        f"Firestore emulator jar not found (looked in {looked}). " + INSTALL_HINT
    )


def _java_major(java: str) -> int | None:
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def find_java() -> str:
    """A Java 17+ binary: $JAVA, Debian's OpenJDK 17, then `java` on PATH."""
    candidates = [os.environ.get(JAVA_ENV)] + [str(p) for p in JAVA17_CANDIDATES if p.exists()]
    candidates.append(shutil.which("java"))
    for java in candidates:
        if java and (_java_major(java) or 0) >= 17:
            return java
    raise FirestoreEmulatorError(JAVA_HINT)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FirestoreEmulator:
    """One emulator process on 127.0.0.1; `with FirestoreEmulator(dir) as host: ...`."""

    def __init__(
        self,
        log_dir: Path,
        port: int | None = None,
        project: str = "crm-local",
        start_timeout: float = 90.0,
        heap_mb: int | None = None,
    ) -> None:
        """`heap_mb`: the JVM's -Xmx; size it for the store with `heap_for(customers)` (the
        default is the floor, enough for a few thousand customers)."""
        self.log_dir = Path(log_dir)
        self.heap_mb = heap_mb if heap_mb is not None else heap_for(0)
        self.port = port
        self.project = project
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, the value for FIRESTORE_EMULATOR_HOST."""
        if self.port is None:
            raise FirestoreEmulatorError("the emulator has not been started")
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "firestore-emulator.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self, java: str, jar: Path) -> list[str]:
        """The java command line (the port must be chosen)."""
        return [
            java,
            f"-Xmx{self.heap_mb}m",  # sized for the store: heap_for()
            "-Duser.language=en",  # the emulator only supports English messages
            "-cp",
            str(jar),
            MAIN_CLASS,
            "--host=127.0.0.1",
            f"--port={self.port}",
            f"--project_id={self.project}",
        ]

    def start(self) -> str:
        """Launch the emulator and wait until it answers HTTP; returns the host."""
        if self.running:
            return self.host
        jar = find_emulator_jar()
        java = find_java()
        if self.port is None:
            self.port = free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cmd = self.command(java, jar)
        LOG_FILES[self.host] = self.log_file
        log.info(
            "starting Firestore emulator on %s with a %d MB heap (log %s)",
            self.host,
            self.heap_mb,
            self.log_file,
        )
        handle = self.log_file.open("ab")
        self._log_handle = handle
        self._process = subprocess.Popen(
            cmd,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self.host

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        url = f"http://{self.host}/"
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise FirestoreEmulatorError(
                    f"Firestore emulator exited with {self._process.returncode}; "
                    f"see {self.log_file}:\n{self._log_tail()}"
                )
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise FirestoreEmulatorError(
            f"Firestore emulator did not answer on {url} within {self.start_timeout:.0f}s; "
            f"see {self.log_file}:\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL after `timeout` seconds."""
        process = self._process
        if process is not None and process.poll() is None:
            log.info("stopping Firestore emulator on %s", self.host)
            signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=timeout)
        self._process = None
        handle = self._log_handle
        self._log_handle = None
        if handle is not None:
            handle.close()

    def reset(self) -> None:
        """Delete every document of the project (the emulator's own DELETE endpoint)."""
        clear_emulator(self.host, self.project)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def clear_emulator(host: str, project: str, database: str = "(default)") -> None:
    """Drop all documents of `project` in the emulator at `host` (tests, bench)."""
    url = f"http://{host}/emulator/v1/projects/{project}/databases/{database}/documents"
    response = httpx.delete(url, timeout=60.0)
    if response.status_code != 200:
        raise FirestoreEmulatorError(
            f"clearing the emulator failed: HTTP {response.status_code} {response.text[:200]}"
        )


#: Rules that let every client read and write: the emulator's behaviour without a rules file.
OPEN_RULES = (
    "rules_version = '2';\n"
    "service cloud.firestore { match /databases/{database}/documents {\n"
    "  match /{path=**} { allow read, write: if true; } } }\n"
)


def load_rules(host: str, project: str, rules: str) -> None:
    """Replace the security rules the emulator enforces for `project` (its REST endpoint; the
    `--rules` flag only reads a file at start). Admin credentials still bypass them."""
    url = f"http://{host}/emulator/v1/projects/{project}:securityRules"
    body = {"rules": {"files": [{"name": "firestore.rules", "content": rules}]}}
    response = httpx.put(url, json=body, timeout=30.0)
    if response.status_code != 200:
        raise FirestoreEmulatorError(
            f"loading rules failed: HTTP {response.status_code} {response.text[:500]}"
        )
