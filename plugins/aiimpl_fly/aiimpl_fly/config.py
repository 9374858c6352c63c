"""Configuration of the Fly Machines backend (environment variables, read by the core)."""

from __future__ import annotations

from aiimpl_core.providers import ConfigVar

API_TOKEN = "AIIMPL_FLY_API_TOKEN"
APP = "AIIMPL_FLY_APP"
API_URL = "AIIMPL_FLY_API_URL"
IMAGE = "AIIMPL_FLY_IMAGE"
REGION = "AIIMPL_FLY_REGION"
INSTANCE = "AIIMPL_FLY_INSTANCE"

DEFAULT_API_URL = "https://api.machines.dev/v1"
#: the session image (docker/session.Dockerfile) pushed to the app's registry
DEFAULT_IMAGE_APP = "aiimpl-session"
DEFAULT_IMAGE = f"registry.fly.io/{DEFAULT_IMAGE_APP}:latest"
#: the instance of a machine created without the metadata key (before there was one)
DEFAULT_INSTANCE = "default"
DEFAULT_CPUS = 2
DEFAULT_MEMORY_MB = 4096
#: the memory Fly gives a machine of shared CPUs: in steps of 256 MB, 256 MB to 2 GB a CPU
MEMORY_STEP_MB = 256
MIN_MEMORY_PER_CPU_MB = 256
MAX_MEMORY_PER_CPU_MB = 2048


def guest(cpus: int | None, memory_mb: int | None) -> tuple[int, int]:
    """The shared CPUs and memory of a machine for a mapping's ``machineCpus`` and
    ``machineMemoryMb``: either one unset is a default that fits the other (1 CPU with the default
    4 GB was a size Fly refuses: at most 2 GB a CPU)."""
    if cpus is None and memory_mb is None:
        return DEFAULT_CPUS, DEFAULT_MEMORY_MB
    if memory_mb is None:
        assert cpus is not None
        fits = min(DEFAULT_MEMORY_MB, MAX_MEMORY_PER_CPU_MB * cpus)
        return cpus, max(fits, MIN_MEMORY_PER_CPU_MB * cpus)
    if cpus is None:
        if memory_mb > MAX_MEMORY_PER_CPU_MB * DEFAULT_CPUS:
            return -(-memory_mb // MAX_MEMORY_PER_CPU_MB), memory_mb
        return max(1, min(DEFAULT_CPUS, memory_mb // MIN_MEMORY_PER_CPU_MB)), memory_mb
    return cpus, memory_mb


def guest_problem(cpus: int, memory_mb: int) -> str | None:
    """Why Fly refuses a machine of ``cpus`` shared CPUs and ``memory_mb`` of memory, or ``None``."""
    if memory_mb % MEMORY_STEP_MB:
        return f"machineMemoryMb must be a multiple of {MEMORY_STEP_MB} on Fly Machines, not {memory_mb}"
    low, high = MIN_MEMORY_PER_CPU_MB * cpus, MAX_MEMORY_PER_CPU_MB * cpus
    if not low <= memory_mb <= high:
        return (f"machineMemoryMb must be between {low} and {high} for {cpus} shared "
                f"CPU{'s' if cpus != 1 else ''} on Fly Machines ({MIN_MEMORY_PER_CPU_MB} to "
                f"{MAX_MEMORY_PER_CPU_MB} a CPU), not {memory_mb}")
    return None
#: how a stop Fly itself or an operator asks for (``fly machine stop``, host maintenance) ends the
#: machine: SIGTERM (Fly's default is SIGINT), which the entrypoint passes on to the session, and
#: 120 s before the kill (Fly's default: 5 s) for the session's stop path: its child's 10 s grace
#: after SIGTERM and 5 s after SIGKILL, a commit and push of the work (up to 90 s), the report
STOP_CONFIG = {"signal": "SIGTERM", "timeout": "120s"}

CONFIG_VARS: tuple[ConfigVar, ...] = (
    ConfigVar(API_TOKEN, "Fly API token (deploy or org token) for the Machines API", sensitive=True),
    ConfigVar(APP, "Fly app the session machines are created in"),
    ConfigVar(API_URL, "Fly Machines API base URL", default=DEFAULT_API_URL),
    ConfigVar(
        IMAGE, "Session image the machines run (built from docker/session.Dockerfile)", default=DEFAULT_IMAGE
    ),
    ConfigVar(REGION, "Fly region of the machines (default: Fly chooses)"),
    ConfigVar(
        INSTANCE,
        "Name of this orchestrator in a shared Fly app: it sees, sweeps and destroys only the "
        "machines it created under this name",
        default=DEFAULT_INSTANCE,
    ),
)

#: metadata keys on every machine we create; ``aiimpl_job`` is how poll_runs finds our machines
META_JOB = "aiimpl_job"
META_ISSUE = "aiimpl_issue"
META_PHASE = "aiimpl_phase"
META_MODE = "aiimpl_session_mode"
META_INSTANCE = "aiimpl_instance"
