"""Resource settings bound to environment variables and read when a run uses the resource.

A `dg.EnvVar` binding fails the launch when its variable is unset, and Dagster's config system
has no optional variant; ours are optional by contract (CRM_DATABASE_URL unset means the
embedded server, SHOPIFY_API_URL/KLAVIYO_API_URL exist only for the sandbox, Shopify and Klaviyo
credentials are not needed against the sandbox). So a resource field holds the documented
sentinel `env("NAME")`, the string "env:NAME", and the resource calls `resolve()` when it is used:

- the definitions are the same whatever is set at import (no `if os.environ.get(...)`);
- the UI and run config show the variable's name, never its value, so secrets stay out of both;
- an unset or empty variable resolves to None, which reaches the resource's fallback or its own
  error naming what to set, at run time;
- a literal value (tests, benches: `PostgresResource(dsn=...)`) passes through unchanged.
"""

from __future__ import annotations

import dagster as dg

PREFIX = "env:"


def env(name: str) -> str:
    """The sentinel binding a resource field to variable `name`."""
    return PREFIX + name


def resolve(value: str | None) -> str | None:
    """The field's value now: its variable's value (None when unset or empty), or the literal."""
    if value is not None and value.startswith(PREFIX):
        return dg.EnvVar(value.removeprefix(PREFIX)).get_value() or None
    return value
