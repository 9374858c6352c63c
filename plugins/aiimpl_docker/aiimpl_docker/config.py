"""Configuration of the local Docker backend (environment variables, read by the core).

The engine itself is found the Docker way (``DOCKER_HOST``, ``DOCKER_TLS_VERIFY``,
``DOCKER_CERT_PATH``, else the default socket); rootful Podman's Docker-compatible service works.
"""

from __future__ import annotations

from aiimpl_core.providers import ConfigVar

IMAGE = "AIIMPL_DOCKER_IMAGE"
NETWORK = "AIIMPL_DOCKER_NETWORK"
COMMAND = "AIIMPL_DOCKER_COMMAND"
VOLUMES = "AIIMPL_DOCKER_VOLUMES"
INSTANCE = "AIIMPL_DOCKER_INSTANCE"
STOP_GRACE = "AIIMPL_DOCKER_STOP_GRACE_SECONDS"
TIMEOUT = "AIIMPL_DOCKER_TIMEOUT_SECONDS"
PULL_TIMEOUT = "AIIMPL_DOCKER_PULL_TIMEOUT_SECONDS"

DEFAULT_IMAGE = "localhost/aiimpl-session:latest"
DEFAULT_INSTANCE = "default"
#: seconds a cancelled or destroyed session gets between SIGTERM and SIGKILL: as long as the Fly
#: backend's stop_config gives a machine, for the session's stop path (its child's 10 s grace after
#: SIGTERM and 5 s after SIGKILL, a commit and push of the work, up to 90 s, then its report)
DEFAULT_STOP_GRACE_SECONDS = 120
MAX_STOP_GRACE_SECONDS = 3600
#: seconds the client waits for the engine to accept a connection and then for each answer
DEFAULT_TIMEOUT_SECONDS = 30
#: an hour: longer than any answer worth waiting for (the stop and the clean-up's wait, which wait
#: for a container, add their own time to it), and within what a socket's timeout can hold
MAX_TIMEOUT_SECONDS = 3600
#: seconds a dispatch waits in all for the pull of a session image the engine does not have: the
#: dispatch, and the poll cycle's thread running it, wait for the pull, so an engine or registry
#: that stopped answering must not hold them for ever; five minutes bring an image of a few GB over
#: a fast link, and leave the dispatch well inside the core's ``run_not_found`` window (600 s), past
#: which the reconciler ends a job still being dispatched
DEFAULT_PULL_TIMEOUT_SECONDS = 300
#: an hour, as long as a session's default lifetime: a pull that needs longer holds the dispatch of
#: every other issue up for longer than a session runs (pull such an image ahead, ``docker pull``),
#: and a socket's timeout holds it
MAX_PULL_TIMEOUT_SECONDS = 3600

CONFIG_VARS: tuple[ConfigVar, ...] = (
    ConfigVar(
        IMAGE,
        "Session image the containers run (built from docker/session.Dockerfile)",
        default=DEFAULT_IMAGE,
    ),
    ConfigVar(
        NETWORK,
        "Docker network the containers join (e.g. host, or a network shared with the "
        "orchestrator); default: the engine's default bridge",
    ),
    ConfigVar(COMMAND, "Command line (shell words) run instead of the image's own entrypoint and command"),
    ConfigVar(VOLUMES, "Comma-separated bind mounts host:container[:ro|rw] (e.g. a package cache)"),
    ConfigVar(
        INSTANCE,
        "Name of this orchestrator on a shared engine: it sees and removes only the "
        "containers it labelled with this name",
        default=DEFAULT_INSTANCE,
    ),
    ConfigVar(
        STOP_GRACE,
        "Seconds a cancelled or destroyed session's container gets between SIGTERM and SIGKILL to save "
        f"its work and report (0-{MAX_STOP_GRACE_SECONDS}); it is removed once it has stopped",
        default=str(DEFAULT_STOP_GRACE_SECONDS),
    ),
    ConfigVar(
        TIMEOUT,
        "Seconds the engine gets to accept a connection and to answer each request before it fails "
        f"as a timeout (more than 0, at most {MAX_TIMEOUT_SECONDS}); a stop waits the container's grace "
        f"on top, and an image pull has a limit of its own, {PULL_TIMEOUT}",
        default=str(DEFAULT_TIMEOUT_SECONDS),
    ),
    ConfigVar(
        PULL_TIMEOUT,
        "Seconds a dispatch waits in all for the pull of a session image the engine does not have "
        f"before its job fails (more than 0, at most {MAX_PULL_TIMEOUT_SECONDS}): the dispatch of other "
        "issues waits for the pull, so an engine or registry that stops answering fails the job instead "
        "of holding them up; keep it under AIIMPL_RUN_NOT_FOUND_SECONDS, and pull an image that takes "
        "longer ahead of time",
        default=str(DEFAULT_PULL_TIMEOUT_SECONDS),
    ),
)

#: labels on every container we start; ``aiimpl.job`` is how poll_runs finds our containers
LABEL_JOB = "aiimpl.job"
LABEL_ISSUE = "aiimpl.issue"
LABEL_PHASE = "aiimpl.phase"
LABEL_MODE = "aiimpl.session-mode"
LABEL_BACKEND = "aiimpl.backend"
LABEL_INSTANCE = "aiimpl.instance"

#: how much of a container's output is kept for the ticket's log excerpt
LOG_TAIL_LINES = 60
LOG_TAIL_CHARS = 4000
#: seconds a container stopped for its lifetime gets between SIGTERM and SIGKILL (the session
#: kept back its reserve before the lifetime ended; the poll waits for this stop)
STOP_TIMEOUT = 10
