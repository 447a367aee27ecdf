"""`crm-pipeline activation plan`: what a Klaviyo sync would write, without writing it."""

from __future__ import annotations

from typing import Annotated

import typer

activation_app = typer.Typer(
    help="Reverse sync to Klaviyo: CRM properties, CRM lists, trigger events.",
    no_args_is_help=True,
)


@activation_app.command("plan")
def plan(
    segment: Annotated[
        list[str] | None,
        typer.Option(help="A segment_name to keep a CRM list for (repeat; default: the defaults)."),
    ] = None,
) -> None:
    """Count the profiles, list memberships and trigger events the next sync would write."""
    from crm_pipeline.activation.plan import build_plan
    from crm_pipeline.activation.settings import DEFAULT_SEGMENTS, sync_enabled
    from crm_pipeline.cli import _engine
    from crm_pipeline.env_binding import env, resolve

    engine = _engine()  # type: ignore[no-untyped-call]  # the CLI's helper
    with engine.connect() as conn:
        todo = build_plan(conn, list(segment or DEFAULT_SEGMENTS))
    for line in todo.lines():
        typer.echo(line)
    if not sync_enabled(resolve(env("KLAVIYO_SYNC_ENABLED"))):
        typer.echo("KLAVIYO_SYNC_ENABLED is not 1: the pipeline writes nothing to Klaviyo")
