"""A mirror sync that loses the Firestore emulator fails saying so, not as thousands of failed
writes: the emulator is a local process that can die mid-sync (most often "Java heap space"
when its heap is too small for the store, see `heap_for` in firestore/emulator.py)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from google.cloud import firestore

from crm_pipeline.firestore.emulator import LOG_FILES

# set by whoever starts the emulator for other processes (the demo, for Dagster's runs)
LOG_ENV = "CRM_FIRESTORE_EMULATOR_LOG"


class FirestoreEmulatorLost(RuntimeError):
    """The Firestore emulator the client talks to no longer accepts connections."""


def emulator_host(client: firestore.Client) -> str | None:
    return getattr(client, "_emulator_host", None) or None


def reachable(host: str, timeout: float = 2.0) -> bool:
    """Whether something accepts TCP connections at `host` (HOST:PORT)."""
    name, _, port = host.rpartition(":")
    try:
        with socket.create_connection((name or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def emulator_log(host: str) -> Path | str:
    """The emulator's log file, if known here: started in this process, or named by LOG_ENV."""
    known = LOG_FILES.get(host)
    if known is not None:
        return known
    return os.environ.get(LOG_ENV) or "unknown (the log of whoever started the emulator)"


def ensure_emulator(client: firestore.Client, cause: BaseException | None = None) -> None:
    """Raise FirestoreEmulatorLost when the client uses an emulator that refuses connections
    (production Firestore is never probed)."""
    host = emulator_host(client)
    if host is None or reachable(host):
        return
    raise FirestoreEmulatorLost(
        f"Lost the Firestore emulator at {host} (connection refused): it stopped or crashed. "
        f"Its log: {emulator_log(host)}. A crash with 'java.lang.OutOfMemoryError: Java heap "
        "space' means its heap is too small for the store: restart it with a heap from "
        "heap_for(customers) (docs/firestore-mirror.md), then run the sync again; documents "
        "already written stay written."
    ) from cause
