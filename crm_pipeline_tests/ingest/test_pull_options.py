"""`load_pull` names no loader: what a loader needs from a pull beyond the common options it
says itself (`Loader.pull_options`), and the customer loader's reconcile options still arrive."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa

from crm_pipeline.defs.common import Pull, load_pull
from crm_pipeline.ingest.activities import ActivityLoader
from crm_pipeline.ingest.customers import CustomerLoader, ReconcileRefused
from crm_pipeline.ingest.orders import OrderLoader

NOW = datetime(2026, 1, 2, tzinfo=UTC)


def test_only_the_customer_loader_wants_reconcile_options() -> None:
    assert OrderLoader.pull_options(reconcile_run_id="r", observed_at=NOW) == {}
    assert ActivityLoader.pull_options(reconcile_run_id="r", observed_at=NOW) == {}
    assert CustomerLoader.pull_options(reconcile_run_id="r", observed_at=NOW) == {
        "reconcile_run_id": "r",
        "observed_at": NOW,
    }
    assert CustomerLoader.pull_options(reconcile_run_id=None, observed_at=NOW) == {
        "reconcile_run_id": None,
        "observed_at": NOW,
    }


class RecordingLoader(ActivityLoader):
    """An activity loader that asks for pull options of its own and records what it got."""

    made: ClassVar[list[dict[str, Any]]] = []

    @classmethod
    def pull_options(cls, *, reconcile_run_id: str | None, observed_at: datetime) -> dict[str, Any]:
        return {"pull_seen": (reconcile_run_id, observed_at)}

    def __init__(self, engine: sa.Engine, *, pull_seen: tuple, **options: Any) -> None:
        RecordingLoader.made.append({"pull_seen": pull_seen, **options})
        super().__init__(engine, **options)


def test_load_pull_passes_what_the_loader_asks_for(clean_db: sa.Engine) -> None:
    RecordingLoader.made.clear()
    before = datetime.now(UTC)
    pull = Pull("test.recording", lambda since: [], None, RecordingLoader)
    load_pull(clean_db, pull, full_refresh=True, run_id="run-1")
    # a full pull that reconciles: the run id; then the reconcile refuses (no point lookup)
    pull = Pull("test.recording", lambda since: [], None, RecordingLoader, reconcile_source="x")
    with pytest.raises(ReconcileRefused):
        load_pull(clean_db, pull, full_refresh=True, run_id="run-2")
    first, second = RecordingLoader.made
    assert first["pull_seen"][0] is None and second["pull_seen"][0] == "run-2"
    assert all(before <= made["pull_seen"][1] <= datetime.now(UTC) for made in (first, second))
    assert first["run_id"] == "run-1" and first["origin"] == "api pull"
