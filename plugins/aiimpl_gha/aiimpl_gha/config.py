"""Configuration of the GitHub Actions backend and the inputs its workflows take.

The GitHub connection itself is the core's (``AIIMPL_GITHUB_*``); this plugin adds the workflow
file names and what the workflows install before the session runs.
"""

from __future__ import annotations

from aiimpl_core.providers import ConfigVar

WORKFLOW_FILE = "AIIMPL_GHA_WORKFLOW_FILE"
GAP_FILL_WORKFLOW_FILE = "AIIMPL_GHA_GAP_FILL_WORKFLOW_FILE"
SESSION_PACKAGE = "AIIMPL_GHA_SESSION_PACKAGE"
AGENT_PACKAGE = "AIIMPL_GHA_AGENT_PACKAGE"
#: the core's: the URL runners reach the orchestrator at, which serves the session program too
PUBLIC_URL = "AIIMPL_PUBLIC_URL"

DEFAULT_WORKFLOW_FILE = "ai-implement.yml"
DEFAULT_GAP_FILL_WORKFLOW_FILE = "ai-implement-gap-fill.yml"
#: installed by sync-workflows when a mapping enables planning without naming its own file
DEFAULT_PLANNING_WORKFLOW_FILE = "ai-implement-planning.yml"
#: the distribution of the session program; by default the workflows install the wheel of it this
#: orchestrator serves (``GET /runner/session-package/<sha256>/<file>``)
SESSION_DISTRIBUTION = "aiimpl-core"
DEFAULT_AGENT_PACKAGE = "@anthropic-ai/claude-code"
#: the agent package that installs no agent (an empty variable is unset: its default)
NO_AGENT = "none"

CONFIG_VARS: tuple[ConfigVar, ...] = (
    ConfigVar(
        WORKFLOW_FILE,
        "Workflow file (a file name in .github/workflows, no path) that runs implementation sessions",
        default=DEFAULT_WORKFLOW_FILE,
    ),
    ConfigVar(
        GAP_FILL_WORKFLOW_FILE,
        "Workflow file (a file name in .github/workflows, no path) that runs gap-analysis sessions "
        "(/trigger/gap-fill)",
        default=DEFAULT_GAP_FILL_WORKFLOW_FILE,
    ),
    ConfigVar(
        SESSION_PACKAGE,
        "Session program the workflows install, as pip arguments (a requirement, a wheel or git URL, "
        "--index-url …), written into them by sync-workflows; unset: the wheel of aiimpl-core this "
        "orchestrator serves, at the URL of its sha256 and pinned to it (aiimpl-core @ <AIIMPL_PUBLIC_URL>"
        "/runner/session-package/<sha256>/aiimpl_core-<version>-py3-none-any.whl#sha256=<sha256>), which it "
        "keeps serving after a deploy",
    ),
    ConfigVar(
        AGENT_PACKAGE,
        "Agent CLI the workflows install, as npm package specs (e.g. @anthropic-ai/claude-code@1.2.3); "
        "none: no agent, for a mapping whose AIIMPL_AGENT_COMMAND brings its own",
        default=DEFAULT_AGENT_PACKAGE,
    ),
)

#: credentials of the session: short-lived, single-use, masked by the workflow before any use
CREDENTIAL_INPUTS: dict[str, str] = {
    "nonce": "AIIMPL_NONCE",
    "result_token": "AIIMPL_RESULT_TOKEN",
    "progress_token": "AIIMPL_PROGRESS_TOKEN",
    "context_token": "AIIMPL_CONTEXT_TOKEN",
}
#: the job's identity, one input each so the run page shows what the run is
IDENTITY_INPUTS: dict[str, str] = {
    "job_id": "AIIMPL_JOB_ID",
    "phase": "AIIMPL_PHASE",
    "issue_key": "AIIMPL_ISSUE_KEY",
    "orchestrator_url": "AIIMPL_URL",
}
#: ``run_name`` becomes the run's name (``run-name``), which is how runs are linked to jobs;
#: ``env`` carries the session's other non-secret variables as one JSON object
WORKFLOW_INPUTS: tuple[str, ...] = ("run_name", *IDENTITY_INPUTS, *CREDENTIAL_INPUTS, "env")
