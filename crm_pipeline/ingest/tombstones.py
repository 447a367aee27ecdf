"""GDPR tombstones: keyed hashes of erased identities, so an erased person is never re-imported.

A bare sha256 of an email or phone can be reversed by hashing candidate values, so tombstones
are HMAC-SHA256 with a key only the pipeline holds: `CRM_TOMBSTONE_KEY` when set (the same value
on every process), else a random key generated on first use and kept in `pipeline_secrets`,
which `crm_analyst` cannot read. Rows written before keyed tombstones (scheme `sha256`) cannot be
re-keyed without the plaintext, so lookups check both forms; a legacy row is upgraded to the
keyed form the first time the identity it hides is seen again (a pull, webhook or redaction).

The same key hashes the identities a quarantined record mentions (`quarantined_records.
identity_keys`), so a redaction finds that person's quarantine rows by index, not by text scan.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from crm_pipeline.normalize import normalize_email, normalize_phone

KEY_ENV = "CRM_TOMBSTONE_KEY"
KEY_NAME = "tombstone_key"
KEYED = "hmac-sha256"
LEGACY = "sha256"

Identity = tuple[
    str, str
]  # (kind, value): ("email", "a@b.c"), ("phone", "+1..."), ("shopify_id", "7")


def legacy_hash(kind: str, value: str) -> str:
    """The unkeyed sha256 tombstones written before keyed ones (still checked, never written)."""
    return hashlib.sha256(_bytes(kind, value)).hexdigest()


def keyed_hash(key: bytes, kind: str, value: str) -> str:
    return hmac.new(key, _bytes(kind, value), hashlib.sha256).hexdigest()


def _bytes(kind: str, value: str) -> bytes:
    # text decoded from bytes that were not UTF-8 holds surrogates; hash it rather than fail
    return f"{kind}:{value}".encode("utf-8", "surrogatepass")


def tombstone_key(conn: sa.Connection) -> bytes:
    """The HMAC key: the environment's, else the stored one (created in its own transaction, so
    a caller's rollback never loses a key that hashes already committed elsewhere depend on)."""
    configured = os.environ.get(KEY_ENV)
    if configured:
        return configured.encode()
    query = sa.text("SELECT value FROM pipeline_secrets WHERE name = :name")
    value = conn.execute(query, {"name": KEY_NAME}).scalar_one_or_none()
    if value is None:
        with conn.engine.begin() as own:
            own.execute(
                sa.text(
                    "INSERT INTO pipeline_secrets (name, value) VALUES (:name, :value) "
                    "ON CONFLICT (name) DO NOTHING"
                ),
                {"name": KEY_NAME, "value": secrets.token_hex(32)},
            )
        value = conn.execute(query, {"name": KEY_NAME}).scalar_one()
    return str(value).encode()


def write_tombstones(
    conn: sa.Connection, identities: Sequence[Identity], customer_id: str | None
) -> int:
    """Tombstone these identities (keyed); returns how many were given."""
    if not identities:
        return 0
    key = tombstone_key(conn)
    conn.execute(
        sa.text(
            "INSERT INTO redaction_tombstones (identity_hash, kind, customer_id, scheme) "
            "SELECT h, k, CAST(:cid AS uuid), :scheme FROM unnest(CAST(:h AS text[]), "
            "CAST(:k AS text[])) AS t(h, k) ON CONFLICT (identity_hash) DO NOTHING"
        ),
        {
            "h": [keyed_hash(key, kind, value) for kind, value in identities],
            "k": [kind for kind, _ in identities],
            "cid": customer_id,
            "scheme": KEYED,
        },
    )
    return len(identities)


def any_tombstones(conn: sa.Connection) -> bool:
    """Whether anyone was ever erased (lets a bulk load skip hashing when nobody was)."""
    return bool(
        conn.execute(sa.text("SELECT EXISTS (SELECT 1 FROM redaction_tombstones)")).scalar()
    )


def find_tombstoned(conn: sa.Connection, identities: Iterable[Identity]) -> set[Identity]:
    """The identities among these that were erased (keyed or legacy tombstone)."""
    wanted = set(identities)
    if not wanted or not any_tombstones(conn):
        return set()
    key = tombstone_key(conn)
    by_hash: dict[str, Identity] = {}
    for kind, value in wanted:
        by_hash[keyed_hash(key, kind, value)] = (kind, value)
        by_hash[legacy_hash(kind, value)] = (kind, value)
    rows = conn.execute(
        sa.text(
            "SELECT identity_hash, scheme FROM redaction_tombstones WHERE identity_hash = ANY(:h)"
        ),
        {"h": list(by_hash)},
    ).all()
    legacy = [r.identity_hash for r in rows if r.scheme == LEGACY]
    if legacy:
        _upgrade_legacy(conn, key, [(h, by_hash[h]) for h in legacy])
    return {by_hash[r.identity_hash] for r in rows}


def _upgrade_legacy(conn: sa.Connection, key: bytes, found: list[tuple[str, Identity]]) -> None:
    """Replace legacy sha256 rows by keyed ones now that we hold the identity they hide."""
    for old, (kind, value) in found:
        conn.execute(
            sa.text(
                "INSERT INTO redaction_tombstones (identity_hash, kind, customer_id, redacted_at, "
                "scheme) SELECT :new, kind, customer_id, redacted_at, :scheme "
                "FROM redaction_tombstones WHERE identity_hash = :old "
                "ON CONFLICT (identity_hash) DO NOTHING"
            ),
            {"new": keyed_hash(key, kind, value), "old": old, "scheme": KEYED},
        )
        conn.execute(
            sa.text("DELETE FROM redaction_tombstones WHERE identity_hash = :old"), {"old": old}
        )


def record_identities(record: Any) -> set[Identity]:
    """Every email and phone a raw record mentions, at any depth (for quarantine identity keys)."""
    return set(_walk(record, ""))


def _walk(value: Any, name: str) -> Iterator[Identity]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, str(key).lower())
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, name)
    elif isinstance(value, str) and value.strip():
        if "@" in value and len(value) <= 320:
            email = normalize_email(value)
            if email:
                yield ("email", email)
        elif "phone" in name:
            phone = normalize_phone(value)
            if phone:
                yield ("phone", phone)


def identity_keys(key: bytes, identities: Iterable[Identity]) -> list[str]:
    """Keyed hashes of these identities, as stored in `quarantined_records.identity_keys`."""
    return [keyed_hash(key, kind, value) for kind, value in sorted(set(identities))]
