"""CRM_DAGSTER_EXECUTOR picks the executor of the jobs whose steps fan out (executors.py)."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster_k8s import k8s_job_executor

from crm_pipeline.executors import EXECUTOR_ENV, ExecutorUnavailable, fan_out_executor


def test_one_process_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    # in process by default; the job's run config may switch a run to the overlap
    assert fan_out_executor() is dg.multi_or_in_process_executor
    monkeypatch.setenv(EXECUTOR_ENV, "multiprocess")
    assert fan_out_executor() is dg.multiprocess_executor


def test_k8s_gives_one_pod_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EXECUTOR_ENV, " K8s ")
    assert fan_out_executor() is k8s_job_executor

    # a job built with it carries the executor (what the run and step pods load)
    @dg.op
    def step() -> None: ...

    @dg.job(executor_def=fan_out_executor())
    def fanned() -> None:
        step()

    assert fanned.executor_def is k8s_job_executor


def test_an_unknown_executor_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EXECUTOR_ENV, "celery")
    with pytest.raises(ExecutorUnavailable, match="in_process, multiprocess, k8s"):
        fan_out_executor()
