# mirror: a pull-through caching registry mirror.
#
#   docker build -t mirror .
#   docker run -d -p 5000:5000 -v mirror-data:/var/lib/mirror mirror
#
# Configure with MIRROR_* environment variables, or mount a config file and point
# MIRROR_CONFIG at it (-v ./config.yml:/etc/mirror/config.yml:ro
# -e MIRROR_CONFIG=/etc/mirror/config.yml). MIRROR_LISTEN and MIRROR_STORAGE_PATH are
# set below and, as environment, take precedence over the file's listen and storage.path.

# --- build: the wheel, from the package sources only -------------------------------
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mirror/ mirror/
RUN python -m pip wheel --no-deps --wheel-dir /wheels .

# --- runtime: the wheel and its runtime dependencies in a virtualenv, no build tools ---
FROM python:3.11-slim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/mirror/bin:$PATH \
    MIRROR_LISTEN=0.0.0.0:5000 \
    MIRROR_STORAGE_PATH=/var/lib/mirror
# The wheel comes in through a bind mount, so it leaves no layer behind.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/mirror \
    && /opt/mirror/bin/pip install /wheels/mirror-*.whl \
    && groupadd --system --gid 10001 mirror \
    && useradd --system --uid 10001 --gid mirror --home-dir /var/lib/mirror \
        --shell /usr/sbin/nologin mirror \
    && mkdir -p /var/lib/mirror /etc/mirror \
    && chown mirror:mirror /var/lib/mirror
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
VOLUME ["/var/lib/mirror"]
EXPOSE 5000
# slim has no curl: ask /healthz with Python itself, on the port MIRROR_LISTEN names.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('MIRROR_LISTEN', ':5000').rsplit(':', 1)[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]
ENTRYPOINT ["mirror"]
CMD ["serve"]
