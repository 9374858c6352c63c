"""The session's settings, read once from the environment the runner backend prepared."""

from __future__ import annotations

import base64
import binascii
import json
import os
import shlex
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..types import Phase
from . import env as E
from .redact import mask_url_credentials

#: the largest number a setting takes (a budget of 31 years): a larger one is a mistake, and the
#: session's clock cannot add it to a time
MAX_NUMBER = 10**9


def token_claim(token: str | None, name: str) -> Any:
    """A claim of a run token (a JWT), read without checking its signature, which is the
    orchestrator's to check; ``None`` when the token is no JWT or has no such claim."""
    try:
        payload = (token or "").split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error, RecursionError):
        return None
    return claims.get(name) if isinstance(claims, dict) else None


def _bool(value: str) -> bool:
    return value.strip().lower() not in ("0", "false", "no", "off", "")


def _command(environ: Mapping[str, str], var: E.EnvVar) -> str:
    """A command line that splits into shell words (checked now, not when the agent is due)."""
    value = (environ.get(var.name) or "").strip() or var.default or ""
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise ConfigError(f"{var.name} is not a valid command line ({exc})") from None
    if not words:
        raise ConfigError(f"{var.name} is empty")
    return value


def _int(environ: Mapping[str, str], var: E.EnvVar, minimum: int = 1) -> int:
    raw = (environ.get(var.name) or var.default or "").strip()
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{var.name} must be an integer, not {raw[:40]!r}") from None
    if value < minimum:
        raise ConfigError(f"{var.name} must be at least {minimum}")
    if value > MAX_NUMBER:
        raise ConfigError(f"{var.name} must be at most {MAX_NUMBER}")
    return value


def header_safe(token: str) -> bool:
    """Whether ``token`` can be sent as a bearer token: printable ASCII without spaces, as every run
    token the orchestrator issues is (an HTTP header cannot carry other characters: the request
    would fail as it is built, after the work was done)."""
    return token.isascii() and token.isprintable() and " " not in token


def _check_run_tokens(tokens: Mapping[E.EnvVar, str | None]) -> None:
    for var, value in tokens.items():
        if value is not None and not header_safe(value):
            # (the value is a secret: not quoted)
            raise ConfigError(f"{var.name} is not a run token the orchestrator issued: it holds "
                              "characters an HTTP header cannot carry")


def url_problem(value: str, *, web: bool = True) -> str | None:
    """Why ``value`` is no URL the session can call (``web``: an http or https one), or ``None``."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises for a port that is no number
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if web and (parts.scheme not in ("http", "https") or not parts.hostname):
        return "must be an http:// or https:// URL with a host"
    if not web and not parts.scheme:
        return "must be a URL with a scheme (https://…)"
    return None


def _url(var: E.EnvVar, value: str, *, web: bool = True) -> str:
    problem = url_problem(value, web=web)
    if problem:
        # the value as given, but never the credentials it may carry
        raise ConfigError(f"{var.name} {problem}, not {mask_url_credentials(value)[:200]!r}")
    return value


#: the longest link the orchestrator takes as a session's ``logUrl``
MAX_LOG_URL_CHARS = 2000


def _log_url(value: str | None) -> str | None:
    """``AIIMPL_LOG_URL`` as the orchestrator takes it (an http or https URL of at most 2,000
    characters): one it refuses would lose the 🚀 comment of every session, said in a log line only."""
    if value is None:
        return None
    value = _url(E.LOG_URL, value)
    if len(value) > MAX_LOG_URL_CHARS:
        raise ConfigError(f"{E.LOG_URL.name} must be at most {MAX_LOG_URL_CHARS} characters, not "
                          f"{len(value)}")
    return value


def branch_refused(name: str, environ: Mapping[str, str]) -> bool:
    """Whether git refuses ``name`` as a branch name: ``git check-ref-format --branch``, the very
    rules ``git checkout -B`` applies (no spaces, ``..``, ``@{``, a leading ``-``, a component
    starting with ``.`` or ending with ``.lock``, control characters …) in the git the session
    runs. ``False`` when git cannot be run: the clone then says so.

    Asked outside any repository (a ``GIT_DIR`` that does not exist): inside one, git would take
    ``@{-1}`` for the branch checked out before and answer with that branch's name.
    """
    if "\x00" in name:
        return True  # a control character, which no argument can even carry
    path = environ.get("PATH") or os.environ.get("PATH") or os.defpath
    try:
        result = subprocess.run(
            ["git", "check-ref-format", "--branch", name],
            env={"PATH": path, "GIT_DIR": os.path.join(os.devnull, "no-repository")},
            capture_output=True, timeout=30, check=False,
        )
    except (OSError, ValueError, subprocess.SubprocessError):
        return False
    # git prints the name it checked; anything else is some other name git would have used
    return result.returncode != 0 or result.stdout.rstrip(b"\n") != os.fsencode(name)


@dataclass(frozen=True)
class SessionConfig:
    """Everything ``aiimpl session run`` needs; :meth:`from_environ` names any missing variable."""

    url: str
    job_id: str
    phase: Phase
    issue_key: str
    owner: str
    repo: str
    base_branch: str
    branch: str
    nonce: str
    result_token: str | None
    progress_token: str | None
    context_token: str | None
    secret_names: tuple[str, ...]
    lifetime: int
    github_api_url: str
    git_base_url: str
    agent_command: str
    review_command: str
    max_turns: int
    review_max_turns: int
    review_enabled: bool
    setup_command: str | None
    verify_command: str | None
    workdir: str | None
    log_url: str | None
    refresh_margin: float
    #: seconds the result is tried for while the orchestrator is unreachable (a third: a report)
    report_retry: float
    author_name: str
    author_email: str
    pr_number: int | None = None
    #: one of :data:`~.env.SESSION_MODES`
    session_mode: str = "autonomous"

    @property
    def clone_url(self) -> str:
        return f"{self.git_base_url.rstrip('/')}/{self.owner}/{self.repo}.git"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> SessionConfig:
        def need(var: E.EnvVar) -> str:
            value = (environ.get(var.name) or "").strip()
            if not value:
                raise ConfigError(f"{var.name} is not set ({var.help})")
            return value

        def opt(var: E.EnvVar) -> str | None:
            value = (environ.get(var.name) or "").strip()
            return value or var.default

        phase_raw = need(E.PHASE)
        try:
            phase = Phase(phase_raw)
        except ValueError:
            raise ConfigError(
                f"{E.PHASE.name} must be planning, implementation or gap-analysis, not {phase_raw!r}"
            ) from None
        # a typo set by hand (a workflow's env, a Docker command) is refused, not taken as autonomous:
        # the operator who asked for a machine held for them would find it gone
        session_mode = (environ.get(E.SESSION_MODE.name) or "").strip() or "autonomous"
        if session_mode not in E.SESSION_MODES:
            raise ConfigError(f"{E.SESSION_MODE.name} must be autonomous, interactive or hybrid, not "
                              f"{session_mode[:40]!r}")
        repository = need(E.REPOSITORY)
        owner, _, repo = repository.partition("/")
        if not owner or not repo or "/" in repo:
            raise ConfigError(f"{E.REPOSITORY.name} must be owner/repo, not {repository!r}")
        pr_number = None
        if environ.get(E.PR_NUMBER.name):
            pr_number = _int(environ, E.PR_NUMBER)
        api_url = _url(E.GITHUB_API_URL, (opt(E.GITHUB_API_URL) or "https://api.github.com").rstrip("/"))
        url = _url(E.URL, need(E.URL).rstrip("/"))
        from .github import web_base

        agent_command = _command(environ, E.AGENT_COMMAND)
        base_branch = need(E.BASE_BRANCH)
        # the dispatcher's for every job: without the result token nothing can be reported (all the
        # work would be done for nothing), without the context token the issue cannot be read.
        # Without the progress token the steps go to /api/step-report with the nonce instead.
        result_token, context_token = need(E.RESULT_TOKEN), need(E.CONTEXT_TOKEN)
        progress_token = opt(E.PROGRESS_TOKEN)
        _check_run_tokens({E.RESULT_TOKEN: result_token, E.CONTEXT_TOKEN: context_token,
                           E.PROGRESS_TOKEN: progress_token})
        token_phase = token_claim(result_token, "phase")
        if isinstance(token_phase, str) and token_phase != phase.value:
            # the orchestrator would refuse the result (phase_mismatch) once the work is done
            raise ConfigError(f"{E.PHASE.name} is {phase.value}, but the run tokens are for {token_phase}")
        branch = (environ.get(E.BRANCH.name) or "").strip()
        if branch and branch_refused(branch, environ):
            # found now, not when the clone checks it out or the push sends it, hours later
            raise ConfigError(f"{E.BRANCH.name} must be a name git accepts for a branch (see git "
                              f"check-ref-format), not {branch[:200]!r}")
        if phase is Phase.IMPLEMENTATION:
            # the session commits and pushes to it: the base branch would take the agent's work as it
            # is, unreviewed, and the pull request would be from that branch into itself
            branch = need(E.BRANCH)
            if branch == base_branch:
                raise ConfigError(f"{E.BRANCH.name} must not be the base branch {base_branch!r}: the "
                                  "session pushes its work to a branch of its own")
        return cls(
            url=url,
            job_id=need(E.JOB_ID),
            phase=phase,
            issue_key=need(E.ISSUE_KEY),
            owner=owner,
            repo=repo,
            base_branch=base_branch,
            # planning pushes nothing; gap-analysis works on the PR branch itself
            branch=branch or base_branch,
            nonce=need(E.NONCE),
            result_token=result_token,
            progress_token=progress_token,
            context_token=context_token,
            secret_names=tuple(
                n.strip() for n in (environ.get(E.SECRET_NAMES.name) or "").split(",") if n.strip()
            ),
            lifetime=_int(environ, E.LIFETIME),
            github_api_url=api_url,
            git_base_url=_url(E.GIT_BASE_URL, (opt(E.GIT_BASE_URL) or web_base(api_url)).rstrip("/"),
                              web=False),
            agent_command=agent_command,
            # (blank, as the other settings: unset)
            review_command=_command(environ, E.REVIEW_COMMAND) if opt(E.REVIEW_COMMAND) else agent_command,
            max_turns=_int(environ, E.MAX_TURNS),
            review_max_turns=_int(environ, E.REVIEW_MAX_TURNS),
            review_enabled=_bool(opt(E.REVIEW) or "true"),
            setup_command=opt(E.SETUP_COMMAND),
            verify_command=opt(E.VERIFY_COMMAND),
            workdir=opt(E.WORKDIR),
            log_url=_log_url(opt(E.LOG_URL)),
            refresh_margin=float(_int(environ, E.TOKEN_REFRESH_SECONDS, minimum=0)),
            report_retry=float(_int(environ, E.REPORT_RETRY_SECONDS, minimum=0)),
            author_name=opt(E.GIT_AUTHOR_NAME) or "AI-Implement",
            author_email=opt(E.GIT_AUTHOR_EMAIL) or "ai-implement@users.noreply.github.com",
            pr_number=pr_number,
            session_mode=session_mode,
        )
