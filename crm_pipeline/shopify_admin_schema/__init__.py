"""Shopify's published Admin GraphQL schemas, one per API version, loaded once per process.

Building a schema from its introspection result takes ~0.4 s (9 MB of JSON), so each version
is built on first use and cached; listing the versions only looks at file names.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from pathlib import Path

from graphql import GraphQLEnumType, GraphQLSchema, build_client_schema

HERE = Path(__file__).resolve().parent
_FILE = re.compile(r"^admin_schema_(\d{4}-\d{2})\.json\.gz$")


class UnknownApiVersion(LookupError):
    """No schema for this API version is shipped with the package."""


def versions() -> list[str]:
    """API versions with a schema here, oldest first."""
    found = (_FILE.match(p.name) for p in HERE.iterdir())
    return sorted(m.group(1) for m in found if m)


def newest_version() -> str:
    """The newest version shipped: the default `SHOPIFY_API_VERSION`."""
    return versions()[-1]


@functools.cache
def schema(version: str) -> GraphQLSchema:
    """The Admin API schema of `version`, built once per process."""
    path = HERE / f"admin_schema_{version}.json.gz"
    if not _FILE.match(path.name) or not path.exists():
        raise UnknownApiVersion(f"no Shopify Admin schema for API version {version!r}")
    with gzip.open(path, "rb") as fh:
        return build_client_schema(json.load(fh)["data"])


def enum_values(version: str, enum: str) -> frozenset[str]:
    """The values of one enum of `version`'s schema (e.g. `WebhookSubscriptionTopic`)."""
    found = schema(version).get_type(enum)
    if not isinstance(found, GraphQLEnumType):
        raise LookupError(f"{enum} is not an enum in API version {version}")
    return frozenset(found.values)
