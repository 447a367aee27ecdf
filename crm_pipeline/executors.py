"""The executor of the jobs whose steps can fan out (full_refresh, incremental_sync).

On one machine their steps run in one process by default, and a run may ask for the pulls to
overlap in their own processes (Dagster's `multi_or_in_process_executor`, chosen per run in the
run config: crm_pipeline/defs/pipeline/executor.py, docs/loading.md). On Kubernetes
(docs/deploying.md) the code location sets CRM_DAGSTER_EXECUTOR=k8s and each step runs in its own
pod with dagster-k8s's
`k8s_job_executor`, configured from the run launcher's settings and, optionally, the run config in
deploy/helm/k8s-job-executor.yaml. The choice is read when the definitions load, so the code
location, the run pod and the step pods (which share its environment) agree.
"""

from __future__ import annotations

import os

import dagster as dg

EXECUTOR_ENV = "CRM_DAGSTER_EXECUTOR"
CHOICES = ("in_process", "multiprocess", "k8s")


class ExecutorUnavailable(RuntimeError):
    """CRM_DAGSTER_EXECUTOR names an executor this installation cannot provide."""


def fan_out_executor() -> dg.ExecutorDefinition:
    """The executor CRM_DAGSTER_EXECUTOR chooses; when unset (or in_process), in process unless
    the run config asks for the overlap."""
    choice = os.environ.get(EXECUTOR_ENV, "").strip().lower() or "in_process"
    if choice == "in_process":
        return dg.multi_or_in_process_executor
    if choice == "multiprocess":
        return dg.multiprocess_executor
    if choice == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as exc:
            raise ExecutorUnavailable(
                f"{EXECUTOR_ENV}=k8s needs dagster-k8s: pip install 'crm-pipeline[k8s]' "
                "(the image has it)"
            ) from exc
        return k8s_job_executor
    raise ExecutorUnavailable(f"{EXECUTOR_ENV}={choice!r}: choose one of {', '.join(CHOICES)}")
