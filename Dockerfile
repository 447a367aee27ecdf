# One image for every crm-pipeline process (docs/deploying.md): the Dagster code location's gRPC
# server, the webhook receiver, the worker, and (same dependencies) dagster-webserver and
# dagster-daemon. Choose the process with the command: `code-server`, `receiver`, `worker`,
# `migrate`, or any other command line (deploy/docker-entrypoint.sh).
#
# The dependencies come from deploy/requirements.lock (`uv pip compile` of pyproject.toml and its
# k8s extra, with hashes), so an image built today and one built next month hold the same files.
# Every compiled dependency ships a wheel; the few source-only ones are pure Python: the build
# stage needs no compiler, and the runtime stage gets only the finished virtualenv.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------- build
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app

# The locked dependencies first: this layer is rebuilt only when the lock file changes.
COPY deploy/requirements.lock deploy/requirements.lock
RUN pip install --require-hashes --no-deps -r deploy/requirements.lock

# The project keeps the layout of a checkout in /app (pyproject.toml with [tool.dg], dagster.yaml,
# workspace.yaml, sql/) and is installed in place: the code finds its instance settings and
# migrations beside itself (crm_pipeline/settings.py REPO_ROOT) as in development.
COPY pyproject.toml setup.py README.md dagster.yaml workspace.yaml ./
COPY sql sql
COPY webhook_receiver webhook_receiver
COPY crm_pipeline crm_pipeline
# --no-deps: everything is already there from the lock; this adds only our own package.
RUN pip install --no-deps --editable . \
    && rm -rf deploy build

# ---------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="crm-pipeline" \
      org.opencontainers.image.description="Dagster code location, webhook receiver and worker of crm-pipeline"

RUN groupadd --system --gid 10001 crm \
    && useradd --system --uid 10001 --gid crm --home-dir /app --shell /usr/sbin/nologin crm \
    && mkdir -p /var/lib/crm /opt/dagster/dagster_home /opt/dagster/storage \
    && chown crm:crm /var/lib/crm /opt/dagster/dagster_home /opt/dagster/storage

COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
COPY deploy/dagster.yaml /opt/dagster/dagster_home/dagster.yaml
COPY deploy/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CRM_HOME=/var/lib/crm \
    DAGSTER_HOME=/opt/dagster/dagster_home

USER 10001:10001
# 4000: the code location's gRPC server; 8000: the receiver; 3000: dagster-webserver.
EXPOSE 4000 8000 3000
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["code-server"]
