# syntax=docker/dockerfile:1
# The raygate image: the gateway sidecar of `raygate manifests` (and any `raygate` command).
#   docker build -t raygate:0.1.0 .
# The builder installs raygate and its dependencies (all available as wheels) into a virtualenv;
# the runtime stage gets only that virtualenv, runs as a fixed non-root uid (so Kubernetes'
# runAsNonRoot can verify it) and keeps no pip, setuptools or compiler.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/raygate
WORKDIR /src
COPY pyproject.toml README.md ./
COPY raygate ./raygate
RUN /opt/raygate/bin/pip install --no-cache-dir . \
 && /opt/raygate/bin/pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE}
RUN python -m pip uninstall --yes --disable-pip-version-check pip setuptools wheel \
 && groupadd --system --gid 65532 raygate \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin raygate \
 && install -d -o 65532 -g 65532 -m 0700 /var/lib/raygate
COPY --from=builder /opt/raygate /opt/raygate
ENV PATH=/opt/raygate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RAYGATE_STATE=/var/lib/raygate
WORKDIR /var/lib/raygate
USER 65532:65532
# 8265: the gateway; 8266: /healthz, /readyz, /metrics (proxyEndpoints.port in the manifests)
EXPOSE 8265 8266
ENTRYPOINT ["raygate"]
CMD ["serve", "--help"]
