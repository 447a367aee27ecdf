"""deploy/helm/values.yaml fits Dagster's chart (its values.schema.json, over the chart's own
defaults as Helm merges them), the run launcher and executor settings fit dagster-k8s's own
config schemas, and deploy/k8s/ holds well-formed Kubernetes objects."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes.client
import yaml
from dagster._config import validate_config
from dagster_k8s import k8s_job_executor
from dagster_k8s.launcher import K8sRunLauncher

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
VALUES = REPO / "deploy" / "helm" / "values.yaml"


def merged(defaults: Any, overrides: Any) -> Any:
    """Helm's merge of user values over a chart's defaults: maps deep, everything else replaced."""
    if isinstance(defaults, dict) and isinstance(overrides, dict):
        result = dict(defaults)
        for key, value in overrides.items():
            result[key] = merged(defaults.get(key), value) if key in defaults else value
        return result
    return copy.deepcopy(overrides)


def offline(schema: Any) -> Any:
    """The schema without its references to Kubernetes object schemas online (kept: the
    constraints written beside them, such as "type": "object")."""
    if isinstance(schema, dict):
        return {
            key: offline(value)
            for key, value in schema.items()
            if not (key == "$ref" and str(value).startswith("https://kubernetesjsonschema.dev/"))
        }
    if isinstance(schema, list):
        return [offline(item) for item in schema]
    return schema


def chart_validator() -> jsonschema.Draft202012Validator:
    schema = offline(json.loads((DATA / "dagster-chart-values.schema.json").read_text()))
    assert "kubernetesjsonschema" not in json.dumps(schema)
    return jsonschema.Draft202012Validator(schema)


def values() -> dict[str, Any]:
    chart_defaults = yaml.safe_load((DATA / "dagster-chart-values.yaml").read_text())
    return merged(chart_defaults, yaml.safe_load(VALUES.read_text()))


def test_values_match_the_charts_schema() -> None:
    errors = sorted(chart_validator().iter_errors(values()), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_a_wrong_value_is_refused_by_the_charts_schema() -> None:
    broken = values()
    broken["runLauncher"]["type"] = "K8sLauncher"
    assert not chart_validator().is_valid(broken)


def test_values_choose_k8s_runs_external_postgres_and_secrets() -> None:
    mine = yaml.safe_load(VALUES.read_text())
    assert mine["runLauncher"]["type"] == "K8sRunLauncher"
    assert mine["postgresql"]["enabled"] is False
    assert mine["generatePostgresqlPasswordSecret"] is False
    assert mine["postgresql"]["postgresqlPassword"] == ""  # the password lives in a Secret
    (deployment,) = mine["dagster-user-deployments"]["deployments"]
    assert deployment["codeServerArgs"][:2] == ["--module-name", "crm_pipeline.definitions"]
    assert deployment["envSecrets"] == [{"name": "crm-pipeline-secrets"}]


def launcher_config(helm_launcher: dict[str, Any]) -> dict[str, Any]:
    """The run_launcher config the chart writes into the instance's dagster.yaml from
    runLauncher.config.k8sRunLauncher (the chart's _instance.tpl, for the keys we set)."""
    return {
        "load_incluster_config": helm_launcher["loadInclusterConfig"],
        "image_pull_policy": helm_launcher["imagePullPolicy"],
        "instance_config_map": "dagster-instance",
        "service_account_name": "dagster",
        "postgres_password_secret": "dagster-postgresql-secret",
        "dagster_home": "/opt/dagster/dagster_home",
        "env_config_maps": [item["name"] for item in helm_launcher["envConfigMaps"]],
        "env_secrets": [item["name"] for item in helm_launcher["envSecrets"]],
        "env_vars": helm_launcher["envVars"],
        "volume_mounts": helm_launcher["volumeMounts"],
        "volumes": helm_launcher["volumes"],
        "labels": helm_launcher["labels"],
        "fail_pod_on_run_failure": helm_launcher["failPodOnRunFailure"],
        "resources": helm_launcher["resources"],
    }


def test_run_launcher_config_fits_dagster_k8s() -> None:
    helm_launcher = values()["runLauncher"]["config"]["k8sRunLauncher"]
    result = validate_config(K8sRunLauncher.config_type(), launcher_config(helm_launcher))
    assert result.success, [e.message for e in result.errors or []]
    # and dagster-k8s does check: an unknown key fails
    bad = {**launcher_config(helm_launcher), "env_secret": ["x"]}
    assert not validate_config(K8sRunLauncher.config_type(), bad).success


def test_step_executor_run_config_fits_dagster_k8s() -> None:
    run_config = yaml.safe_load((REPO / "deploy" / "helm" / "k8s-job-executor.yaml").read_text())
    config_type = k8s_job_executor.config_schema.config_type
    result = validate_config(config_type, run_config["execution"]["config"])
    assert result.success, [e.message for e in result.errors or []]
    assert not validate_config(config_type, {"max_concurrency": 8}).success


def check_against_model(value: Any, type_name: str, where: str) -> None:
    """Every key of `value` is a field of the kubernetes client model `type_name`, recursively."""
    if type_name.startswith("list["):
        assert isinstance(value, list), where
        for i, item in enumerate(value):
            check_against_model(item, type_name[5:-1], f"{where}[{i}]")
        return
    if type_name.startswith(("dict(", "dict[")):
        assert isinstance(value, dict), where
        return
    model = getattr(kubernetes.client.models, type_name, None)
    if model is None:  # str, int, object (IntOrString, Quantity), ...
        assert not isinstance(value, dict) or type_name == "object", where
        return
    assert isinstance(value, dict), f"{where} should be a {type_name} object"
    fields = {wire: attr for attr, wire in model.attribute_map.items()}
    for key, item in value.items():
        assert key in fields, f"{where}.{key} is not a field of {type_name}"
        check_against_model(item, model.openapi_types[fields[key]], f"{where}.{key}")


MODELS = {
    ("apps/v1", "Deployment"): "V1Deployment",
    ("v1", "Service"): "V1Service",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2HorizontalPodAutoscaler",
}


def test_receiver_manifests_are_well_formed_kubernetes_objects() -> None:
    documents = list(yaml.safe_load_all((REPO / "deploy" / "k8s" / "receiver.yaml").read_text()))
    client = kubernetes.client.ApiClient()
    kinds = {}
    for document in documents:
        type_name = MODELS[(document["apiVersion"], document["kind"])]
        check_against_model(document, type_name, document["kind"])
        # the client's models also refuse missing required fields
        client._ApiClient__deserialize(document, type_name)  # type: ignore[attr-defined]
        kinds[document["kind"]] = document
    deployment, service, hpa = (
        kinds["Deployment"],
        kinds["Service"],
        kinds["HorizontalPodAutoscaler"],
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["receiver"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["envFrom"] == [{"secretRef": {"name": "crm-pipeline-secrets"}}]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
