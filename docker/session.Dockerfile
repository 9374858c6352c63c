# The session image: what a Fly Machine or a local Docker container runs for one job.
#
# Git, Python, the AI-Implement core (for `aiimpl session run`) and, by default, the Claude Code
# CLI (the default agent command). Build from the repository root:
#
#   docker build -f docker/session.Dockerfile -t localhost/aiimpl-session:latest .
#
# Where no public registry is reachable, build on a local base with Python 3.11+ (see
# docs/session-image.md): --build-arg BASE=localhost/bookworm:latest
# Leave out the agent CLI (a custom AIIMPL_AGENT_COMMAND) with --build-arg AGENT_PACKAGE=
ARG BASE=docker.io/library/python:3.11-slim-bookworm
FROM ${BASE}

ARG AGENT_PACKAGE=@anthropic-ai/claude-code
# the Node.js major version the agent CLI runs on (Claude Code needs 22 or later; Debian bookworm
# ships 18, so the build installs this one from the npm registry, beside Debian's npm)
ARG NODE_MAJOR=22
# extra CA certificates (PEM text) to trust, for networks behind a TLS-inspecting proxy: used by
# the build (npm, pip) and kept in the image's trust store for the sessions (git, the session
# program, the agent). Certificates are public: this is not a secret.
ARG CA_CERTS=

# every TLS client of the image uses the system trust store (Python's requests and Node.js would
# otherwise use bundles of their own, without CA_CERTS)
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt

# git and certificates for the clone and push; bash for setup and verification scripts;
# Node.js only when an agent CLI from npm is installed
RUN set -eux; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update; \
    apt-get install -y --no-install-recommends git ca-certificates bash openssh-client procps; \
    if [ -n "$CA_CERTS" ]; then \
        printf '%s\n' "$CA_CERTS" > /usr/local/share/ca-certificates/aiimpl-extra.crt; \
        update-ca-certificates; \
    fi; \
    if ! command -v python3 >/dev/null; then \
        apt-get install -y --no-install-recommends python3 python3-pip python3-venv; \
    fi; \
    if [ -n "$AGENT_PACKAGE" ]; then \
        apt-get install -y --no-install-recommends nodejs npm; \
        npm install -g "node@${NODE_MAJOR}"; \
        hash -r; \
        test "$(node -p 'process.versions.node.split(".")[0]')" = "$NODE_MAJOR"; \
        npm install -g "$AGENT_PACKAGE"; \
        npm cache clean --force; \
    fi; \
    rm -rf /var/lib/apt/lists/*

# the core, from this repository, in its own virtual environment
COPY pyproject.toml README.md /opt/aiimpl/src/
COPY aiimpl_core /opt/aiimpl/src/aiimpl_core
RUN set -eux; \
    python3 -m venv /opt/aiimpl/venv; \
    /opt/aiimpl/venv/bin/pip install --no-cache-dir /opt/aiimpl/src; \
    ln -s /opt/aiimpl/venv/bin/aiimpl /usr/local/bin/aiimpl; \
    rm -rf /opt/aiimpl/src

COPY docker/session-entrypoint.sh /usr/local/bin/aiimpl-session-entrypoint
RUN chmod 0755 /usr/local/bin/aiimpl-session-entrypoint

# the agent refuses to skip permission prompts as root; the session needs no privileges
RUN useradd --create-home --shell /bin/bash session
USER session
WORKDIR /home/session
ENV AIIMPL_LOG_LEVEL=INFO \
    PYTHONUNBUFFERED=1

# `aiimpl session run`, then the session mode's hold (interactive, hybrid)
ENTRYPOINT ["/usr/local/bin/aiimpl-session-entrypoint"]
