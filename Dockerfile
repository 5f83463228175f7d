# syntax=docker/dockerfile:1
# The runner itself (`orchestrator serve`): not the agents' sandbox (config/sandbox/Dockerfile).
#
#   docker build -t orchestrator-runner .                              # FROM python:3.11-slim
#   docker build --build-arg BASE=registry.example/python:3.12-slim -t orchestrator-runner .
#
# BASE: any Debian-based image with Python >= 3.11 and its venv module (the official
# python:3.11-slim and later are). The build needs PyPI (or a mirror via PIP_INDEX_URL).
#
# At run time the runner needs (compose.yaml shows all of it):
#   - the Docker engine: mount /var/run/docker.sock and add its group (group_add), or set
#     DOCKER_HOST (tcp://... with TLS, or ssh://...) to a remote engine;
#   - its data directory mounted at the SAME path on the host as inside this container: the
#     engine bind-mounts each run's worktree into the agent's container by that path;
#   - orchestrator.yml at /etc/orchestrator/orchestrator.yml (or ORCHESTRATOR_CONFIG), and the
#     secrets it names (forge token, webhook secret, LLM key) as environment variables.
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# git: mirrors, worktrees and pushes happen in the runner; tini: reaps git's children and
# passes SIGTERM on, so a stopping runner leaves leases to lapse cleanly.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates tini \
 && rm -rf /var/lib/apt/lists/*

# A fixed uid/gid, so the data directory's owner is the same on every machine.
RUN groupadd --gid 10001 orchestrator \
 && useradd --uid 10001 --gid 10001 --home-dir /var/lib/orchestrator --create-home \
        --shell /usr/sbin/nologin orchestrator

WORKDIR /opt/orchestrator
COPY pyproject.toml README.md ./
COPY runner ./runner
COPY gates ./gates
COPY config ./config
# Installed in place (-e): the runner reads config/ (gates.yml, prompts) beside its package.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install -e '.[redis]' \
 && /opt/venv/bin/orchestrator --help >/dev/null
ENV PATH=/opt/venv/bin:$PATH \
    ORCHESTRATOR_CONFIG=/etc/orchestrator/orchestrator.yml \
    ORCHESTRATOR_SERVER__HOST=0.0.0.0 \
    ORCHESTRATOR_SERVER__PORT=8080 \
    ORCHESTRATOR_DATA_DIR=/var/lib/orchestrator

USER orchestrator
WORKDIR /var/lib/orchestrator
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"
ENTRYPOINT ["tini", "--", "orchestrator"]
CMD ["serve"]
