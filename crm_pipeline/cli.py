"""The `crm-pipeline` command (docs/reference.md section 2)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from crm_pipeline.activation.cli import activation_app

app = typer.Typer(
    help="crm-pipeline: Shopify + Klaviyo + webhooks into one customer record.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
db_app = typer.Typer(help="The CRM database: embedded server and migrations.", no_args_is_help=True)
sandbox_app = typer.Typer(help="The local Shopify + Klaviyo sandbox store.", no_args_is_help=True)
webhooks_app = typer.Typer(
    help="Webhook subscriptions and the delivery queue.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(activation_app, name="activation")

console = Console()
err = Console(stderr=True)


def _logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _engine():
    from crm_pipeline.db.engine import make_engine
    from crm_pipeline.db.migrate import migrate
    from crm_pipeline.db.server import database_dsn

    dsn = database_dsn()
    migrate(dsn)
    return make_engine(dsn)


# ------------------------------------------------------------------------------------ demo
@app.command()
def demo(
    customers: Annotated[int, typer.Option(help="Size of the generated sandbox store.")] = 3000,
    seed: Annotated[int, typer.Option(help="Seed of the sandbox store.")] = 42,
    ui_port: Annotated[int, typer.Option(help="Dagster UI port.")] = 3000,
    receiver_port: Annotated[int, typer.Option(help="Webhook receiver port.")] = 8000,
    sandbox_port: Annotated[int, typer.Option(help="Sandbox API port.")] = 8765,
    no_ui: Annotated[bool, typer.Option(help="Run the refresh, print the summary, exit.")] = False,
) -> None:
    """Everything on embedded defaults: Postgres, Firestore emulator, sandbox, receiver, UI."""
    from crm_pipeline.demo import Demo

    _logging()
    Demo(
        customers=customers,
        seed=seed,
        ui_port=ui_port,
        receiver_port=receiver_port,
        sandbox_port=sandbox_port,
    ).run(keep_running=not no_ui)


# -------------------------------------------------------------------------------------- db
@db_app.command("url")
def db_url() -> None:
    """Print the DSN of the CRM database (starting the embedded server if needed)."""
    from crm_pipeline.db.server import database_dsn

    typer.echo(database_dsn())  # plain stdout for $(crm-pipeline db url), no rich wrapping


@db_app.command("start")
def db_start() -> None:
    """Start the embedded PostgreSQL under CRM_HOME and apply migrations."""
    from crm_pipeline.db.migrate import migrate
    from crm_pipeline.db.server import EmbeddedPostgres

    _logging()
    server = EmbeddedPostgres.default()
    dsn = server.start()
    migrate(dsn)
    console.print(f"embedded PostgreSQL running: {dsn}")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL."""
    from crm_pipeline.db.server import EmbeddedPostgres

    EmbeddedPostgres.default().stop()
    console.print("embedded PostgreSQL stopped")


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply sql/ migrations to CRM_DATABASE_URL or the embedded server (idempotent)."""
    from crm_pipeline.db.migrate import migrate
    from crm_pipeline.db.server import database_dsn

    _logging()
    applied = migrate(database_dsn())
    console.print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


# --------------------------------------------------------------------------------- sandbox
@sandbox_app.command("generate")
def sandbox_generate(
    customers: Annotated[int, typer.Option(help="Live Shopify customers to write.")] = 5000,
    seed: Annotated[int, typer.Option(help="Seed; the same seed writes the same bytes.")] = 0,
    out: Annotated[Path, typer.Option(help="Store directory to write.")] = Path("sandbox-store"),
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="The store's 'now' (ISO date or time, UTC), e.g. today so the store reaches up "
            "to the run date; default: a fixed date, so a seed always writes the same bytes.",
        ),
    ] = None,
) -> None:
    """Write a realistic store directory (docs/reference.md section 5)."""
    from crm_pipeline.normalize import parse_timestamp
    from crm_pipeline.sandbox.builders.base import REFERENCE_TIME
    from crm_pipeline.sandbox.generate import generate_store

    moment = parse_timestamp(as_of) if as_of else REFERENCE_TIME
    if moment is None:
        raise typer.BadParameter(f"{as_of!r} is not an ISO date or time", param_hint="--as-of")
    summary = generate_store(
        out, customers=customers, seed=seed, progress=True, reference_time=moment
    )
    console.print(summary)


@sandbox_app.command("serve")
def sandbox_serve(
    store: Annotated[Path, typer.Option(help="Store directory to serve.")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8765,
    fault_rate: Annotated[float, typer.Option(help="Share of requests answered 5xx.")] = 0.0,
    latency: Annotated[float, typer.Option(help="Seconds added to every response.")] = 0.0,
    rate_limit_429: Annotated[float, typer.Option(help="Share of requests answered 429.")] = 0.0,
) -> None:
    """Serve a store through the Shopify Admin GraphQL and Klaviyo REST APIs."""
    from crm_pipeline.sandbox.server import serve

    _logging()
    console.print(f"sandbox on http://127.0.0.1:{port} (SHOPIFY_API_URL and KLAVIYO_API_URL)")
    serve(store, port, fault_rate=fault_rate, latency=latency, rate_limit_429=rate_limit_429)


# -------------------------------------------------------------------------------- receiver
@app.command()
def receiver(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 2,
) -> None:
    """Run the webhook receiver (docs/reference.md section 4); needs the *_WEBHOOK_SECRET vars."""
    from webhook_receiver.main import run

    _logging()
    run(port=port, host=host, workers=workers, demo=os.environ.get("CRM_DEMO") == "1")


# ---------------------------------------------------------------------------------- worker
@app.command()
def worker(
    batch_size: Annotated[int, typer.Option(help="Deliveries applied per cycle at most.")] = 50,
    poll_seconds: Annotated[
        float, typer.Option(help="Look at the queue this often even without a notification.")
    ] = 1.0,
    dagster_events: Annotated[
        bool, typer.Option(help="Report the work to Dagster as runless asset events.")
    ] = True,
) -> None:
    """Apply landed webhook deliveries continuously and refresh what they touched."""
    from crm_pipeline.worker.command import run_worker
    from crm_pipeline.worker.loop import WorkerSettings

    _logging()
    run_worker(WorkerSettings(batch_size=batch_size, poll_seconds=poll_seconds), dagster_events)


# -------------------------------------------------------------------------------- webhooks
@webhooks_app.command("register")
def webhooks_register(
    address: Annotated[str, typer.Option(help="Public URL of POST /webhooks/<source>.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; change nothing.")
    ] = False,
    source: Annotated[str, typer.Option(help="Whose webhooks: shopify|klaviyo.")] = "shopify",
) -> None:
    """Subscribe every topic of SOURCE we apply to ADDRESS, idempotently."""
    if source == "klaviyo":
        _register_klaviyo(address, dry_run)
    elif source == "shopify":
        _register_shopify(address, dry_run)
    else:
        err.print(f"[red]--source must be shopify or klaviyo, not {source!r}[/red]")
        raise typer.Exit(2)


def _register_klaviyo(address: str, dry_run: bool) -> None:
    """Klaviyo: one system webhook for the event topics we apply, signed with our secret."""
    from crm_pipeline.webhooks.klaviyo_subscriptions import RegistrationError, register_from_env

    try:
        register_from_env(address, dry_run=dry_run, echo=typer.echo)
    except RegistrationError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


def _register_shopify(address: str, dry_run: bool) -> None:
    """Shopify: topics of the configured API version only; compliance topics via the toml."""
    from crm_pipeline.definitions import resources
    from crm_pipeline.sources.shopify import COMPLIANCE_TOPICS, compliance_toml
    from crm_pipeline.webhooks.topics import SHOPIFY_HANDLERS

    # resolve the config as Dagster does at launch (the env("NAME") bindings read at use)
    client = resources()["shopify"].process_config_and_initialize().get_client()
    topics = [*SHOPIFY_HANDLERS, *COMPLIANCE_TOPICS]
    result = client.register_webhooks(address, topics, dry_run=dry_run)
    version = client.api_version
    typer.echo(f"Shopify API {version} -> {address}" + (" (dry run: nothing changed)" * dry_run))
    would = "would be " if dry_run else ""
    for key in ("created", "updated", "kept"):
        typer.echo(f"{would}{key}: {len(result[key])}  {', '.join(result[key])}")
    for move in result["update"]:
        typer.echo(f"  {move['topic']}: {move['from']} -> {address}")
    if result["skipped"]:
        typer.echo(f"skipped, not topics of API {version}: {', '.join(result['skipped'])}")
    if result["compliance"]:
        typer.echo(
            f"Compliance topics ({', '.join(result['compliance'])}) cannot be subscribed through "
            "the API. Add these lines to your app's shopify.app.toml and run "
            "`shopify app deploy`:\n"
        )
        typer.echo(compliance_toml(address, version))


@webhooks_app.command("replay")
def webhooks_replay(
    dead: Annotated[bool, typer.Option("--dead", help="Only dead letters.")] = False,
    ids: Annotated[list[int] | None, typer.Option("--id", help="Only these deliveries.")] = None,
) -> None:
    """Re-queue failed or dead deliveries for the next process_webhooks run."""
    from crm_pipeline.webhooks import replay

    count = replay(_engine(), dead_only=dead, ids=ids or None)
    console.print(f"re-queued {count} deliveries")


# ---------------------------------------------------------------------------------- search
@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Name, email or phone, fuzzy.")] = "",
    status: Annotated[
        list[str] | None, typer.Option(help="active|inactive|vip|blocked|pending")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Has this tag.")] = None,
    segment: Annotated[list[str] | None, typer.Option(help="In this segment.")] = None,
    customer_type: Annotated[list[str] | None, typer.Option("--type")] = None,
    country: Annotated[list[str] | None, typer.Option(help="Country code of the address.")] = None,
    source: Annotated[list[str] | None, typer.Option(help="shopify|klaviyo|manual")] = None,
    sort: Annotated[
        str, typer.Option(help="Fields, '-' for descending, comma separated.")
    ] = "-score",
    limit: Annotated[int, typer.Option(help="Rows per page.")] = 20,
    cursor: Annotated[str | None, typer.Option(help="Next-page cursor printed last time.")] = None,
) -> None:
    """Fuzzy customer search for people; prints a table (docs/search.md)."""
    from crm_pipeline.analytics.search import SearchError, render_table
    from crm_pipeline.analytics.search import search as run_search

    filters = _filters(
        status=status,
        tags=tag,
        segment=segment,
        customer_type=customer_type,
        country=country,
        source=source,
    )
    try:
        page = run_search(_engine(), query, filters, sort, limit, cursor)
    except SearchError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    console.print(render_table(page.rows))
    if page.next_cursor:
        console.print(f"next page: --cursor {page.next_cursor}")


def _filters(**values: list[str] | None) -> dict[str, list[str]]:
    return {key: value for key, value in values.items() if value}


# ---------------------------------------------------------------------------------- import
@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="Shopify customer CSV, Klaviyo profile CSV, .jsonl")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Write nothing; same report.")] = False,
    file_format: Annotated[
        str, typer.Option("--format", help="auto|shopify_csv|klaviyo_csv|jsonl")
    ] = "auto",
) -> None:
    """Bulk import customers; prints inserted, updated, unchanged and quarantined by reason."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from crm_pipeline.ingest.files import ImportFormatError, import_file, report_lines

    engine = _engine()
    size = file.stat().st_size if file.exists() else 0
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
    ) as progress:
        task = progress.add_task(f"importing {file.name}", total=size)
        try:
            result = import_file(
                engine,
                file,
                fmt=file_format,
                dry_run=dry_run,
                on_bytes=lambda n: progress.advance(task, n),
            )
        except ImportFormatError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from exc
    for line in report_lines(result):
        typer.echo(line)
    if result.cancelled:
        raise typer.Exit(130)


# ---------------------------------------------------------------------------------- export
@app.command()
def export(
    out: Annotated[Path, typer.Option(help="File to write.")],
    file_format: Annotated[str, typer.Option("--format", help="csv|jsonl|parquet")] = "csv",
    segment: Annotated[list[str] | None, typer.Option(help="In this segment.")] = None,
    status: Annotated[list[str] | None, typer.Option(help="With this status.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="With this tag.")] = None,
) -> None:
    """Write the filtered customers with their metrics."""
    from crm_pipeline.analytics.export import export_customers

    count = export_customers(
        _engine(),
        out,
        file_format,
        _filters(segment=segment, status=status, tags=tag),
        progress=err.is_terminal,
    )
    console.print(f"wrote {count} customers to {out}")


if __name__ == "__main__":  # pragma: no cover
    app()
