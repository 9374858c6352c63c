"""Environment variables the runner backends set for the session program.

One table, shared by the dispatcher (which fills them) and the session program (which reads
them); ``docs/session.md`` documents it. The first block is filled by the dispatcher for every
job; the second block holds optional knobs an operator sets through a mapping's ``extraEnv``
(or the runner's own environment).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class EnvVar:
    """One variable: its name, what it means, whether its value is a secret, its default."""

    name: str
    help: str
    secret: bool = False
    default: str | None = None


URL = EnvVar("AIIMPL_URL", "Orchestrator base URL the session calls back")
JOB_ID = EnvVar("AIIMPL_JOB_ID", "The job id")
PHASE = EnvVar("AIIMPL_PHASE", "planning, implementation or gap-analysis")
ISSUE_KEY = EnvVar("AIIMPL_ISSUE_KEY", "Tracker issue key, e.g. ENG-42")
REPOSITORY = EnvVar("AIIMPL_REPOSITORY", "owner/repo of the target repository")
BASE_BRANCH = EnvVar("AIIMPL_BASE_BRANCH", "Branch the work starts from (the PR branch for gap-analysis)")
BRANCH = EnvVar("AIIMPL_BRANCH", "Branch the session pushes: {branchPrefix}{issue key}")
PR_NUMBER = EnvVar("AIIMPL_PR_NUMBER", "Pull request number (gap-analysis only)")
#: the session modes, as a mapping's ``sessionMode`` takes them
SESSION_MODES = ("autonomous", "interactive", "hybrid")
SESSION_MODE = EnvVar(
    "AIIMPL_SESSION_MODE",
    "autonomous, interactive or hybrid, in lower case (white space around it is ignored; unset or empty: "
    "autonomous); another value ends the session before any work, as a configuration it cannot use",
)
HELD_BY = EnvVar(
    "AIIMPL_SESSION_HOLDER",
    "Internal: set by the session image's entrypoint, which holds the machine after the session as "
    "AIIMPL_SESSION_MODE says; without it (a GitHub Actions run, a Docker command of a mapping's own) "
    "nothing holds, whatever the mode",
)
LIFETIME = EnvVar("AIIMPL_LIFETIME_SECONDS", "Wall-clock budget of the session", default="3600")
NONCE = EnvVar(
    "AIIMPL_NONCE", "One-time job nonce for /api/token, /api/status, /api/step-report", secret=True
)
RESULT_TOKEN = EnvVar("AIIMPL_RESULT_TOKEN", "Single-use run token for POST /runner/result", secret=True)
PROGRESS_TOKEN = EnvVar("AIIMPL_PROGRESS_TOKEN", "Run token for POST /runner/progress", secret=True)
CONTEXT_TOKEN = EnvVar("AIIMPL_CONTEXT_TOKEN", "Run token for GET /runner/planning-context", secret=True)
SECRET_NAMES = EnvVar(
    "AIIMPL_SECRET_NAMES",
    "Comma-separated names of environment variables holding secrets (the session redacts their values)",
)
GITHUB_API_URL = EnvVar(
    "AIIMPL_GITHUB_API_URL", "GitHub REST API base URL (pull requests)", default="https://api.github.com"
)

# -- optional knobs (a mapping's extraEnv, or the runner's environment) ----------------------

GIT_BASE_URL = EnvVar(
    "AIIMPL_GIT_BASE_URL",
    "Base URL of git remotes; the clone URL is "
    "{base}/{owner}/{repo}.git. Default: derived from AIIMPL_GITHUB_API_URL "
    "(https://github.com for api.github.com, the host for GitHub Enterprise)",
)
AGENT_COMMAND = EnvVar(
    "AIIMPL_AGENT_COMMAND",
    "The agent command line (shell words). Placeholders "
    "{prompt}, {prompt_file} and {max_turns} are filled in; without {prompt} or "
    "{prompt_file} the prompt is written to the agent's standard input",
    default="claude -p {prompt} --output-format json --max-turns {max_turns} --permission-mode acceptEdits",
)
REVIEW_COMMAND = EnvVar(
    "AIIMPL_REVIEW_COMMAND", "The post-push review command (same placeholders); default: AIIMPL_AGENT_COMMAND"
)
MAX_TURNS = EnvVar("AIIMPL_MAX_TURNS", "Turn limit of the agent run", default="50")
REVIEW_MAX_TURNS = EnvVar("AIIMPL_REVIEW_MAX_TURNS", "Turn limit of the post-push review", default="10")
REVIEW = EnvVar("AIIMPL_REVIEW", "Run the post-push review (true/false)", default="true")
SETUP_COMMAND = EnvVar(
    "AIIMPL_SETUP_COMMAND",
    "The mapping's setup command (bash), used when the repository has no .ai-implement/setup.sh",
)
VERIFY_COMMAND = EnvVar(
    "AIIMPL_VERIFY_COMMAND",
    "The mapping's verification command (bash), used when the repository has no .ai-implement/verify.sh",
)
WORKDIR = EnvVar("AIIMPL_WORKDIR", "Directory the session clones into (default: a fresh temporary directory)")
LOG_URL = EnvVar("AIIMPL_LOG_URL", "Link to this session's logs, shown in the progress comments (an "
                 "http:// or https:// URL of at most 2,000 characters)")
LOG_LEVEL = EnvVar(
    "AIIMPL_LOG_LEVEL",
    "Level of the session program's own log lines on standard error (DEBUG, INFO, WARNING, ERROR or "
    "CRITICAL; another value is taken as WARNING, the session is not stopped for it)",
    default="WARNING",
)
TOKEN_REFRESH_SECONDS = EnvVar(
    "AIIMPL_TOKEN_REFRESH_SECONDS",
    "A repository token expiring within this many seconds is replaced by a fresh one from /api/token",
    default="300",
)
REPORT_RETRY_SECONDS = EnvVar(
    "AIIMPL_REPORT_RETRY_SECONDS",
    "Seconds the session keeps trying what it cannot do without (its repository token, the planning "
    "context, its result) while the orchestrator cannot be reached (a deploy: no answer, a gateway's "
    "502, 503 or 504); a progress report waits out such an outage a third as long",
    default="60",
)
GIT_AUTHOR_NAME = EnvVar(
    "AIIMPL_GIT_AUTHOR_NAME", "Author name of the session's commits", default="AI-Implement"
)
GIT_AUTHOR_EMAIL = EnvVar(
    "AIIMPL_GIT_AUTHOR_EMAIL",
    "Author e-mail of the session's commits",
    default="ai-implement@users.noreply.github.com",
)

# -- set by the session for its own git credential helper (never by an operator) -------------

CREDENTIAL_CACHE = EnvVar(
    "AIIMPL_CREDENTIAL_CACHE",
    "Internal: the session's private token cache file, read and refreshed by the git credential helper",
)

ALL: tuple[EnvVar, ...] = (
    URL,
    JOB_ID,
    PHASE,
    ISSUE_KEY,
    REPOSITORY,
    BASE_BRANCH,
    BRANCH,
    PR_NUMBER,
    SESSION_MODE,
    LIFETIME,
    NONCE,
    RESULT_TOKEN,
    PROGRESS_TOKEN,
    CONTEXT_TOKEN,
    SECRET_NAMES,
    GITHUB_API_URL,
)

#: The optional knobs, documented with the table above.
OPTIONAL: tuple[EnvVar, ...] = (
    GIT_BASE_URL,
    AGENT_COMMAND,
    REVIEW_COMMAND,
    MAX_TURNS,
    REVIEW_MAX_TURNS,
    REVIEW,
    SETUP_COMMAND,
    VERIFY_COMMAND,
    WORKDIR,
    LOG_URL,
    LOG_LEVEL,
    TOKEN_REFRESH_SECONDS,
    REPORT_RETRY_SECONDS,
    GIT_AUTHOR_NAME,
    GIT_AUTHOR_EMAIL,
)

#: Names that hold secrets even when ``AIIMPL_SECRET_NAMES`` forgets them (a runner may add its own
#: credentials, e.g. ``GITHUB_TOKEN`` on GitHub Actions): their values are redacted too. (Not any
#: name ending in ``_KEY``: ``AIIMPL_ISSUE_KEY``'s value would be masked in every comment.)
LIKELY_SECRET_NAME = re.compile(
    r"(TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|API_KEY|PRIVATE_KEY|ACCESS_KEY|CREDENTIAL)",
    re.IGNORECASE,
)

#: Variables the agent process never sees: the job's credentials stay with the session.
HIDDEN_FROM_AGENT: frozenset[str] = frozenset(
    {NONCE.name, RESULT_TOKEN.name, PROGRESS_TOKEN.name, CONTEXT_TOKEN.name, CREDENTIAL_CACHE.name}
)


def markdown_table(variables: tuple[EnvVar, ...]) -> str:
    """The Markdown table of ``variables`` as ``docs/session.md`` shows it (a test keeps them equal)."""
    lines = ["| Variable | Default | Secret | Meaning |", "|---|---|---|---|"]
    for var in variables:
        default = f"`{var.default}`" if var.default else ""
        help_text = var.help.replace("|", "\\|")
        lines.append(f"| `{var.name}` | {default} | {'yes' if var.secret else ''} | {help_text} |")
    return "\n".join(lines)
