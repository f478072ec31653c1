# syntax=docker/dockerfile:1
# The streamproc image: `streamproc worker` (the default command) and `streamproc quality`.
#   docker build -t streamproc:0.1.0 .
# Runs as uid/gid 10001 on a read-only root filesystem: the only paths it writes are /tmp and
# /var/lib/streamproc (the quality service's join store; mount a volume there). See docs/deploy.md.

# The base is pinned by tag and by the digest of its multi-architecture index: a rebuild gets
# the same bytes. To move it: docs/deploy.md#the-base-image-and-the-lock.

# Builder: the runtime dependencies from requirements/image.txt, each checked against its
# hashes (`make lock` rewrites it), then the project's wheel without dependencies; the runtime
# stage copies the virtualenv whole, so it needs no pip run.
FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The locked dependencies first: their layer is reused until the lock changes.
COPY requirements/image.txt requirements/
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes -r requirements/image.txt
COPY pyproject.toml README.md LICENSE ./
COPY streamproc/ streamproc/
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --no-deps /wheels/streamproc-*.whl \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/pip uninstall --yes pip \
 && /opt/venv/bin/streamproc --help >/dev/null

FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="streamproc" \
      org.opencontainers.image.description="Streaming content-moderation workers: Kafka in, vLLM-scored verdicts out." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm" \
      org.opencontainers.image.base.digest="sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d"
# Packs and topic specs are looked up at absolute paths, whatever the working directory; mount
# your own packs over /app/policies (the worker reloads them when they change).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STREAMPROC_POLICY__PATHS='["/app/policies"]' \
    STREAMPROC_QUALITY__DATA_DIR=/var/lib/streamproc
RUN groupadd --system --gid 10001 streamproc \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin streamproc \
 && mkdir -p /var/lib/streamproc \
 && chown 10001:10001 /var/lib/streamproc
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY policies/ policies/
COPY topics/ topics/
USER 10001:10001
# 9108: the worker's /metrics, /healthz, /readyz; 9109: the same for `streamproc quality`.
EXPOSE 9108 9109
# Liveness of the worker's event loop (slim has no curl). The quality service serves on 9109:
# its compose service and Helm chart probe that port instead.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('STREAMPROC_METRICS__PORT', '9108'), timeout=4)"]
ENTRYPOINT ["streamproc"]
CMD ["worker"]
