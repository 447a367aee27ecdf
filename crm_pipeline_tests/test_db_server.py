"""The embedded server's socket folder admits no other local user (issue 11, item 6)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import psycopg
import pytest

from crm_pipeline.db.server import EmbeddedPostgres, EmbeddedPostgresError


def test_socket_folder_is_private_and_the_server_answers(
    embedded_postgres: EmbeddedPostgres,
) -> None:
    # trust authentication: anyone who can reach the socket is superuser
    info = embedded_postgres.socket_dir.lstat()
    assert stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
    assert stat.S_IMODE(info.st_mode) == 0o700
    with psycopg.connect(embedded_postgres.dsn("postgres")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_socket_folder_is_tightened_or_refused(tmp_path: Path) -> None:
    from crm_pipeline.db.server import _private_dir

    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    _private_dir(loose)  # a folder an older version created
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = tmp_path / "link"
    link.symlink_to(elsewhere)
    with pytest.raises(EmbeddedPostgresError, match="symlink"):
        _private_dir(link)

    if os.geteuid() == 0:  # only root can hand a folder to someone else
        foreign = tmp_path / "foreign"
        foreign.mkdir()
        os.chown(foreign, 12345, 12345)
        with pytest.raises(EmbeddedPostgresError, match="owned by this user"):
            _private_dir(foreign)
