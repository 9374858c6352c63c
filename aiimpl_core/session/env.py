"""Environment variables the runner backends set for the session program.

One table, shared by the dispatcher (which fills them) and the session program (which reads
them); ``docs/session.md`` documents it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EnvVar:
    name: str
    help: str
    secret: bool = False


URL = EnvVar("AIIMPL_URL", "Orchestrator base URL the session calls back")
JOB_ID = EnvVar("AIIMPL_JOB_ID", "The job id")
PHASE = EnvVar("AIIMPL_PHASE", "planning, implementation or gap-analysis")
ISSUE_KEY = EnvVar("AIIMPL_ISSUE_KEY", "Tracker issue key, e.g. ENG-42")
REPOSITORY = EnvVar("AIIMPL_REPOSITORY", "owner/repo of the target repository")
BASE_BRANCH = EnvVar("AIIMPL_BASE_BRANCH", "Branch the work starts from (the PR branch for gap-analysis)")
BRANCH = EnvVar("AIIMPL_BRANCH", "Branch the session pushes: {branchPrefix}{issue key}")
PR_NUMBER = EnvVar("AIIMPL_PR_NUMBER", "Pull request number (gap-analysis only)")
SESSION_MODE = EnvVar("AIIMPL_SESSION_MODE", "autonomous, interactive or hybrid")
LIFETIME = EnvVar("AIIMPL_LIFETIME_SECONDS", "Wall-clock budget of the session")
NONCE = EnvVar("AIIMPL_NONCE", "One-time job nonce for /api/token, /api/status, /api/step-report", secret=True)
RESULT_TOKEN = EnvVar("AIIMPL_RESULT_TOKEN", "Single-use run token for POST /runner/result", secret=True)
PROGRESS_TOKEN = EnvVar("AIIMPL_PROGRESS_TOKEN", "Run token for POST /runner/progress", secret=True)
CONTEXT_TOKEN = EnvVar("AIIMPL_CONTEXT_TOKEN", "Run token for GET /runner/planning-context", secret=True)
SECRET_NAMES = EnvVar("AIIMPL_SECRET_NAMES", "Comma-separated names of environment variables holding secrets "
                      "(the session redacts their values)")

ALL: tuple[EnvVar, ...] = (URL, JOB_ID, PHASE, ISSUE_KEY, REPOSITORY, BASE_BRANCH, BRANCH, PR_NUMBER,
                           SESSION_MODE, LIFETIME, NONCE, RESULT_TOKEN, PROGRESS_TOKEN, CONTEXT_TOKEN, SECRET_NAMES)
