# The runner itself (`orchestrator serve`): not the agents' sandbox (config/sandbox/Dockerfile).
#
#   docker build -t orchestrator-runner .                              # FROM python:3.11-slim
#   docker build --build-arg BASE=registry.example/python:3.12-slim -t orchestrator-runner .
#
# BASE: any Debian-based image with Python >= 3.11 and its venv module (the official
# python:3.11-slim and later are). Without a registry, a local image will do, e.g. the one
# scripts/build-sandbox-image makes: --build-arg BASE=orchestrator-sandbox-base:bookworm.
# The build needs apt (Debian's mirror) and PyPI (or a mirror via PIP_INDEX_URL); it installs
# the pinned versions of requirements/runtime.lock.
#
# Behind a TLS-intercepting proxy, give the build the proxy's CA certificate(s) as PEM text:
#
#   docker build --build-arg EXTRA_CA_CERTS="$(cat corp-proxy-ca.pem)" -t orchestrator-runner .
#
# They are added to the image's trust store (update-ca-certificates) and pip is pointed at
# it. Pass the proxy's CA, not a whole system bundle (one argument holds at most 128 KiB);
# they are public certificates, and visible in `docker history`. Without the argument the
# build is unchanged. If the build container has no network, add --network host. At run time
# the runner's HTTP clients use certifi's bundle: behind the same proxy, also set
# SSL_CERT_FILE and REQUESTS_CA_BUNDLE to /etc/ssl/certs/ca-certificates.crt.
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

# Extra CA certificates (PEM), e.g. a TLS-intercepting proxy's: see the top of this file.
ARG EXTRA_CA_CERTS=""
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
        printf '%s\n' "$EXTRA_CA_CERTS" >/usr/local/share/ca-certificates/extra-ca-certs.crt \
     && update-ca-certificates \
     && printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >/etc/pip.conf; \
    fi

# A fixed uid/gid, so the data directory's owner is the same on every machine.
RUN groupadd --gid 10001 orchestrator \
 && useradd --uid 10001 --gid 10001 --home-dir /var/lib/orchestrator --create-home \
        --shell /usr/sbin/nologin orchestrator

# How the container runs, set before the code goes in: with the classic builder every
# instruction below a changed file is redone (seconds each), so these stay cached.
ENV PATH=/opt/venv/bin:$PATH \
    ORCHESTRATOR_CONFIG=/etc/orchestrator/orchestrator.yml \
    ORCHESTRATOR_SERVER__HOST=0.0.0.0 \
    ORCHESTRATOR_SERVER__PORT=8080 \
    ORCHESTRATOR_DATA_DIR=/var/lib/orchestrator
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"
ENTRYPOINT ["tini", "--", "orchestrator"]
CMD ["serve"]

WORKDIR /opt/orchestrator
# The dependencies first, the pinned versions of requirements/runtime.lock (scripts/lock
# refreshes it): a change to the code reuses this layer (the slow part of the build) and only
# reinstalls the package itself. The lock holds the build backend (hatchling, and editables
# for its editable installs), so that step needs no network and resolves nothing.
COPY requirements/runtime.lock ./requirements/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY runner ./runner
COPY gates ./gates
COPY config ./config
# Installed in place (-e): the runner reads config/ (gates.yml, prompts) beside its package.
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation -e '.[redis]' \
 && /opt/venv/bin/orchestrator --help >/dev/null

USER orchestrator
WORKDIR /var/lib/orchestrator
