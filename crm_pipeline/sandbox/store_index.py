"""Compact on-disk indexes over the sandbox store's JSONL files.

The sandbox must serve stores of millions of records without holding them in memory, so each
JSONL file gets a few numpy arrays (sort key, byte offset, length, optional tag) sorted by
(timestamp, line number); records are read back with `os.pread` by offset, which is safe to
share between the server's threads. Indexes are cached next to the store (`.sandbox-index/`)
keyed by file size and mtime, so a restart of a 1M-customer sandbox is instant.
"""

from __future__ import annotations

import logging
import os
import threading
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_US = np.iinfo(np.int64).min


def to_us(value: str | None) -> int:
    """ISO-8601 timestamp (any offset, `Z` allowed) -> microseconds since the epoch, UTC."""
    if not value:
        return MIN_US
    dt = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> str:
    """Microseconds since the epoch -> ISO-8601 UTC with `Z`, as Shopify's DateTime scalar."""
    dt = datetime.fromtimestamp(us / 1_000_000, tz=UTC)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_utc(value: str | None) -> str | None:
    """Normalise an ISO timestamp to UTC `Z` form; None stays None, garbage passes through."""
    if not value:
        return None
    try:
        return from_us(to_us(value))
    except (TypeError, ValueError, OverflowError):
        return value  # a dirty store record: let the pipeline's validation see it as it is


def safe_us(*values: str | None) -> int:
    """The first parseable timestamp among `values` in us (MIN_US when none parses)."""
    for value in values:
        try:
            if value:
                return to_us(value)
        except (TypeError, ValueError, OverflowError):
            continue
    return MIN_US


# (sort timestamp in us, tag or None) extracted from one parsed record; None skips the record
KeyFn = Callable[[dict], tuple[int, int] | None]


@dataclass
class JsonlIndex:
    """Sorted positions of one JSONL file; position i is the i-th record in (key, line) order."""

    path: Path
    keys: np.ndarray  # int64 microseconds, ascending
    offsets: np.ndarray  # int64 byte offsets
    lengths: np.ndarray  # int32 line lengths (without newline)
    tags: np.ndarray  # int64 free tag: numeric id for Shopify, metric code for events

    def __post_init__(self) -> None:
        self._fd: int | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    @property
    def fd(self) -> int:
        if self._fd is None:
            with self._lock:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def raw(self, pos: int) -> bytes:
        return os.pread(self.fd, int(self.lengths[pos]), int(self.offsets[pos]))

    def read(self, pos: int) -> dict:
        return orjson.loads(self.raw(pos))

    def lower_bound(self, key_us: int) -> int:
        """First position whose key is >= key_us."""
        return int(np.searchsorted(self.keys, key_us, side="left"))

    def upper_bound(self, key_us: int) -> int:
        """First position whose key is > key_us."""
        return int(np.searchsorted(self.keys, key_us, side="right"))

    def iter_range(self, start: int, stop: int | None = None) -> Iterator[tuple[int, dict]]:
        stop = len(self) if stop is None else stop
        for pos in range(start, stop):
            yield pos, self.read(pos)

    def subset(self, mask: np.ndarray) -> JsonlIndex:
        """A filtered view (e.g. one metric's events) that keeps the sort order."""
        return JsonlIndex(
            self.path, self.keys[mask], self.offsets[mask], self.lengths[mask], self.tags[mask]
        )

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _cache_file(path: Path, name: str) -> Path:
    return path.parent.parent / ".sandbox-index" / f"{path.parent.name}-{path.stem}-{name}.npz"


def build_index(path: Path, key_fn: KeyFn, *, cache_name: str = "v1") -> JsonlIndex:
    """Scan `path` once (or load the cached arrays) and return its sorted index."""
    stat = path.stat()
    stamp = np.array([stat.st_size, stat.st_mtime_ns], dtype=np.int64)
    cache = _cache_file(path, cache_name)
    if cache.exists():
        try:
            with np.load(cache) as z:
                if np.array_equal(z["stamp"], stamp):
                    return JsonlIndex(path, z["keys"], z["offsets"], z["lengths"], z["tags"])
        except (OSError, ValueError, KeyError):
            log.warning("ignoring unreadable index cache %s", cache)

    # typed arrays, not lists: 8 bytes per value keeps a 10M-line scan in a few hundred MB
    keys, tags, offsets, lengths = array("q"), array("q"), array("q"), array("q")
    offset, skipped = 0, 0
    with path.open("rb") as fh:
        for line in fh:
            size = len(line)
            body = line.rstrip(b"\r\n")
            if body.strip():
                try:
                    got = key_fn(orjson.loads(body))
                except (ValueError, TypeError, KeyError, AttributeError):
                    got = None
                if got is None:
                    skipped += 1
                else:
                    keys.append(got[0])
                    tags.append(got[1])
                    offsets.append(offset)
                    lengths.append(len(body))
            offset += size
    if skipped:
        log.warning("%s: %d lines without a usable id are not served", path, skipped)
    k = np.frombuffer(keys, dtype=np.int64)
    # stable sort keeps file order among equal timestamps, a total and repeatable order
    order = np.argsort(k, kind="stable")
    index = JsonlIndex(
        path,
        k[order],
        np.frombuffer(offsets, dtype=np.int64)[order],
        np.frombuffer(lengths, dtype=np.int64)[order].astype(np.int32),
        np.frombuffer(tags, dtype=np.int64)[order],
    )
    try:
        cache.parent.mkdir(exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            stamp=stamp,
            keys=index.keys,
            offsets=index.offsets,
            lengths=index.lengths,
            tags=index.tags,
        )
        os.replace(tmp, cache)
    except OSError:
        log.info("store folder not writable, index for %s not cached", path)
    return index


def read_ids(path: Path, field: str = "id") -> set:
    """All values of `field` in a small JSONL file (deleted customers, metrics)."""
    if not path.exists():
        return set()
    out = set()
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                out.add(orjson.loads(line).get(field))
    return out
