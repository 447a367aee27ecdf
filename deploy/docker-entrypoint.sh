#!/bin/sh
# The image's processes by name (Dockerfile); anything else runs as given (dagster-webserver ...).
set -eu

case "${1:-code-server}" in
  code-server)
    shift || true
    exec dagster code-server start --host 0.0.0.0 --port "${DAGSTER_GRPC_PORT:-4000}" \
      --module-name crm_pipeline.definitions --location-name crm_pipeline "$@"
    ;;
  receiver)
    shift
    exec crm-pipeline receiver --host 0.0.0.0 --port "${CRM_RECEIVER_PORT:-8000}" \
      --workers "${CRM_RECEIVER_WORKERS:-2}" "$@"
    ;;
  worker)
    shift
    exec crm-pipeline worker "$@"
    ;;
  migrate)
    shift
    exec crm-pipeline db migrate "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
