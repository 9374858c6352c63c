"""The session pipeline: token, clone, setup, agent, commit, push, PR, verification, review, result.

Each step is reported to the orchestrator (``/runner/progress``) and the lifecycle events become
the reference's progress comments (``/api/status``). Every failure ends as one
:class:`Failure` whose ``reason`` is the reference's "Run failure messages" wording; the result,
the steps, the comments and the session's own log pass through the :class:`Redactor`.

Order at the end: the working tree is removed and ``session_cleaned_up`` is posted *before*
``/runner/result``, because the result ends the job and a job's nonce (which opens
``/api/status``) stops working once the job has ended. A machine held for a person to attach
(``interactive``, ``hybrid`` after a failure) keeps its work tree and is not cleaned up then: no
``session_cleaned_up`` is posted. A failed step the orchestrator did not take
(it could not be reached) is reported again after the result, which it records late.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TextIO, TypeVar

from .. import logs
from ..errors import ProviderError
from ..types import LogLabel, Phase
from . import env as E
from . import procs, prompts
from .agent import AgentRun, run_agent
from .api import Orchestrator
from .config import SessionConfig, header_safe, token_claim, url_problem
from .credential import git_environment
from .git import REFUSED_TOKEN_TRIES, Git, GitError, RefusedChanges
from .github import (
    Budget,
    Interrupted,
    PullRequestError,
    find_ended_pull_request,
    find_open_pull_request,
    open_pull_request,
)
from .redact import Redactor
from .token_cache import RepoToken, TokenCache

NO_CHANGES = "Nothing to commit: Claude left no file changes in the working tree"
EXCERPT_CHARS = 4000
#: the review's blockers the result carries, at most (the rest are counted)
MAX_BLOCKERS = 50
#: seconds kept back from the budget to save the work, report and clean up after a stop
MAX_RESERVE = 120.0
#: the longest saving the work (commit and push) may take once the budget is spent or the runner
#: stopped the session; within the budget's end less REPORT_TIME, but never less than SAVE_MIN
SAVE_ALLOWANCE = 90.0
SAVE_MIN = 10.0
#: seconds kept after saving the work for the result and the last reports
REPORT_TIME = 15.0
#: seconds a stopped session spends looking for the pull request GitHub may have opened anyway
PR_LOOKUP_AFTER_STOP = 5.0
#: the repository's verification script, run as the session cloned it
VERIFY_SCRIPT = ".ai-implement/verify.sh"
#: a :class:`Failure`'s ``kind`` for how the session ended a command or call (``ProcessResult.stopped``,
#: ``Interrupted.stopped``)
STOPPED_KINDS = {"signal": "stopped", "deadline": "timed_out"}

T = TypeVar("T")


@dataclass
class Failure(Exception):
    """How the run failed. ``kind``: ``failed``, ``timed_out`` (the budget ran out) or
    ``stopped`` (the runner sent SIGTERM, SIGINT or SIGHUP)."""

    reason: str
    label: LogLabel = LogLabel.SESSION_FAILED
    excerpt: str | None = None
    kind: str = "failed"

    def __str__(self) -> str:
        return self.reason


@dataclass
class Usage:
    """The agent's cost and turns over all its passes."""

    cost_usd: float | None = None
    turns: int | None = None

    def add(self, run: AgentRun) -> None:
        if run.cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + run.cost_usd
        if run.turns is not None:
            self.turns = (self.turns or 0) + run.turns


@dataclass
class State:
    """What the run has produced so far (read when building the result)."""

    context: dict[str, Any] = field(default_factory=dict)
    clone_dir: str | None = None
    start_sha: str | None = None  # where the agent started
    base_sha: str | None = None  # the base branch: what the pull request is compared with
    resumed: bool = False  # the branch existed (an earlier attempt's work): continued from it
    #: the commit of a branch left behind by a merged pull request, or by one closed without a
    #: merge, which the push replaces
    replacing: str | None = None
    agent_ran: bool = False
    pushed: bool = False
    commit: str | None = None  # the commit the work ended at (the one pushed)
    pr_url: str | None = None
    pr_number: int | None = None
    step: str = "start"
    notes: list[str] = field(default_factory=list)  # comments of the result, said along the way
    #: the failed step the orchestrator did not take (it could not be reached)
    unsent_step: dict[str, Any] | None = None




def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def format_duration(seconds: float) -> str:
    """``3725`` → ``1h 02m 05s``; ``65`` → ``1m 05s``; ``4`` → ``4s``."""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


class Session:
    """One run of the session program.

    :param config: the parsed environment.
    :param environ: the full environment (secret values are read from it; children inherit it).
    :param out: where the session's own (redacted) log goes.
    """

    def __init__(
        self, config: SessionConfig, environ: Mapping[str, str], *, out: TextIO | None = None
    ) -> None:
        self.cfg = config
        self.environ = dict(environ)
        self.out = out or sys.stderr
        names = set(config.secret_names) | {n for n in self.environ if E.LIKELY_SECRET_NAME.search(n)}
        secrets = [self.environ.get(name, "") for name in sorted(names)]
        secrets += [
            config.nonce,
            config.result_token or "",
            config.progress_token or "",
            config.context_token or "",
        ]
        self.redactor = Redactor(secrets, url_credentials=True)
        logs.SECRETS.follow(self.redactor)  # and in every log line of this process
        self.stop = threading.Event()
        self.stop_signal = "SIGTERM"  # the signal that set ``stop``
        self.started = time.monotonic()
        reserve = min(MAX_RESERVE, config.lifetime * 0.15)
        self.deadline = self.started + config.lifetime - reserve
        self.api = Orchestrator(
            config.url,
            config.nonce,
            {
                "runner:result": config.result_token,
                "runner:progress": config.progress_token,
                "runner:planning-context": config.context_token,
            },
            self.redactor,
            deadline=self.deadline,
            end=self.started + config.lifetime,
            stop=self.stop,
            report_patience=config.report_retry / 3,
            result_patience=config.report_retry,
            needed_patience=config.report_retry,
        )
        #: GitHub's calls end with the budget's main part, and on a stop, as the commands do
        self.github_budget = Budget(self.deadline, self.stop)
        self.state_dir = tempfile.mkdtemp(prefix="aiimpl-session-")
        self.cache = TokenCache(os.path.join(self.state_dir, "tokens.json"))
        self.usage = Usage()
        self.state = State()
        self.own_workdir: str | None = None
        self.git: Git | None = None
        self.services: int | None = None  # the process group of setup, kept for what it started

    # -- plumbing ---------------------------------------------------------------------------

    def log(self, message: str) -> None:
        try:
            print(f"[aiimpl session] {self.redactor.text(message)}", file=self.out, flush=True)
        except (OSError, ValueError):
            # the log's reader went away (a closed pipe): the run and its reports go on without it,
            # and what is written there from now on (the log lines, the last flush as the program
            # exits, which would make its exit status 120) goes nowhere
            with contextlib.suppress(OSError, ValueError, AttributeError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.out.fileno())
                os.close(devnull)

    def _learn_tokens(self) -> None:
        # the credential helper may have fetched tokens in its own process
        self.redactor.add(*(t.token for t in self.cache.load()))

    def _clean(self, text: str) -> str:
        """``text`` (a command's whole output) masked of every secret known, the tokens the
        credential helper fetched meanwhile included. Output is masked whole before any of it is
        cut for a reason or an excerpt: a cut first could leave the end of a secret behind."""
        self._learn_tokens()
        return self.redactor.text(text)

    def _cleaned(self, result: procs.ProcessResult) -> procs.ProcessResult:
        return replace(result, stdout=self._clean(result.stdout), stderr=self._clean(result.stderr))

    def _excerpt(self, text: str) -> str:
        """The end of ``text``, which :meth:`_clean` masked already (masked again all the same)."""
        return self.redactor.text(procs.tail(text, EXCERPT_CHARS))

    @property
    def child_env(self) -> dict[str, str]:
        """The environment of setup, the agent and verification: without the job's credentials."""
        return {k: v for k, v in self.environ.items() if k not in E.HIDDEN_FROM_AGENT}

    @property
    def git_env(self) -> dict[str, str]:
        """The environment of git's local commands: the agent's (no credentials), the identity,
        and no way to ask for a password."""
        env = git_environment(self.child_env, "")
        env.pop(E.CREDENTIAL_CACHE.name, None)  # the helper answers nothing without its cache
        env.update(
            GIT_AUTHOR_NAME=self.cfg.author_name,
            GIT_AUTHOR_EMAIL=self.cfg.author_email,
            GIT_COMMITTER_NAME=self.cfg.author_name,
            GIT_COMMITTER_EMAIL=self.cfg.author_email,
        )
        return env

    @property
    def git_network_env(self) -> dict[str, str]:
        """The environment of clone and push: the credential helper, which reads the nonce to ask
        for a repository token and answers only for the clone's host; never the run tokens."""
        base = {k: v for k, v in self.environ.items()
                if k not in (E.RESULT_TOKEN.name, E.PROGRESS_TOKEN.name, E.CONTEXT_TOKEN.name)}
        env = git_environment(base, self.cache.path, self.cfg.clone_url)
        env.update({k: v for k, v in self.git_env.items() if k.startswith("GIT_") and "CONFIG" not in k})
        return env

    def repo_token(self) -> RepoToken:
        """A repository token valid for a while: the cached one, else a fresh one."""
        self._learn_tokens()
        token = self.cache.current(self.cfg.refresh_margin)
        if token is None:
            token = self.api.repository_token(self.cfg.owner, refused=self.cache.last_refused())
            self.cache.add(token)
        return token

    def _with_repo_token(self, call: Callable[[str], T], used: list[str] | None = None) -> T:
        """``call(token)`` with a repository token valid for a while, made again with a fresh one
        while GitHub refuses each with 401 (revoked before its expiry: the App suspended or
        reinstalled, the token found pushed somewhere public), as git's commands are (up to
        :data:`~aiimpl_core.session.git.REFUSED_TOKEN_TRIES` in all, and never twice with one
        token). ``used`` gets each token tried."""
        tried: set[str] = set()
        while True:
            token = self.repo_token()
            if used is not None:
                used.append(token.token)
            try:
                return call(token.token)
            except PullRequestError as exc:
                if exc.status != 401 or token.token in tried or len(tried) + 1 >= REFUSED_TOKEN_TRIES:
                    raise
                tried.add(token.token)
            self.cache.discard(token.token)
            self.log("GitHub refused the repository token (401): asking the orchestrator for another")

    def _interrupted(self) -> str | None:
        """``stopped`` once the runner sent a stop signal, ``timed_out`` once the budget ran out,
        else ``None``."""
        if self.stop.is_set():
            return "stopped"
        return "timed_out" if time.monotonic() >= self.deadline else None

    def _stopped_by(self, stopped: str) -> str:
        """How a command the session ended (``ProcessResult.stopped``) ended, in a few words."""
        if stopped == "deadline":
            return "stopped: the wall-clock budget ran out"
        return f"stopped: the runner stopped the session ({self.stop_signal})"

    def _interruption(self, kind: str, during: str) -> str:
        """How a run that was stopped (``kind`` ``stopped``) or ran out of time ended, ``during`` what."""
        if kind == "stopped":
            return f"The session was stopped by its runner ({self.stop_signal}) during {during}"
        return f"the wall-clock budget of {self.cfg.lifetime}s ran out during {during}"

    def _check_clock(self, during: str) -> None:
        kind = self._interrupted()
        if kind:
            raise Failure(self._interruption(kind, during), kind=kind)

    def _interrupted_saving_work(self, during: str) -> Failure | None:
        """When the session was stopped or ran out of time during ``during`` (a git command of the
        commit or the push): the work is saved on the reserve, and the failure says where it is."""
        kind = self._interrupted()
        if not kind:
            return None
        where = self._save_work(f"{during} was interrupted")
        what = self._interruption(kind, during)
        return Failure(self.redactor.text(f"{what}. {where}".strip()), kind=kind)

    def _stopped(self, result: procs.ProcessResult, during: str) -> None:
        kind = STOPPED_KINDS.get(result.stopped or "")
        if kind:
            raise Failure(self._interruption(kind, during), excerpt=self._excerpt(result.output), kind=kind)

    @contextlib.contextmanager
    def step(self, step_id: str, step_type: str | None = None) -> Iterator[dict[str, Any]]:
        """Report a step as running, then succeeded or failed, with the detail the body fills."""
        self.state.step = step_id
        started_at = _now_iso()
        record = {"id": step_id, "type": step_type or step_id, "started_at": started_at}
        self.api.step({**record, "status": "running"})
        self.log(f"{step_id}: started")
        detail: dict[str, Any] = {}
        try:
            yield detail
        except Failure as failure:
            detail["error"] = failure.reason
            self._failed_step({**record, "status": "failed", "finished_at": _now_iso(), "detail": detail})
            self.log(f"{step_id}: failed: {failure.reason}")
            raise
        except Exception as exc:
            detail["error"] = f"{type(exc).__name__}"
            self._failed_step({**record, "status": "failed", "finished_at": _now_iso(), "detail": detail})
            raise
        status = "skipped" if detail.get("skipped") else "succeeded"
        self.api.step({**record, "status": status, "finished_at": _now_iso(), "detail": detail})
        self.log(f"{step_id}: {status}")

    def _failed_step(self, report: dict[str, Any]) -> None:
        """Report the step the run failed in: it gets a try even while the reports are held back
        (a call the run needs that gave up found the orchestrator unreachable), and one the
        orchestrator did not take is reported again once the result is delivered."""
        if not self.api.step(report, final=True):
            self.state.unsent_step = report

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum: int, frame: object) -> None:  # noqa: ARG001
            if not self.stop.is_set():
                self.stop_signal = signal.Signals(signum).name
            self.stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        # the terminal (or the ssh connection) of a session run by hand went away: stopped as by its
        # runner, not killed with the agent's process group left running; unless started under
        # nohup, which asked for SIGHUP to be ignored
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
            signal.signal(signal.SIGHUP, on_signal)

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> int:
        """Run every step and report the result; the process exit code (0: success reported)."""
        self._install_signals()
        body: dict[str, Any]
        try:
            body = self._pipeline()
        except Failure as failure:
            body = self._on_failure(failure)
        except Exception as exc:  # noqa: BLE001 - a bug must still end the job with a clean report
            reason = f"the session program failed unexpectedly ({type(exc).__name__}: {exc})"
            body = self._on_failure(Failure(self.redactor.text(reason)))
        return self._finish(body)

    def _pipeline(self) -> dict[str, Any]:
        cfg = self.cfg
        # the machine (or container, or job) exists and runs this program: say so first
        self.api.status("session_created", logUrl=cfg.log_url)
        with self.step("token") as detail:
            try:
                token = self.api.repository_token(cfg.owner)
            except ProviderError as exc:
                # stopped, or out of time, while the orchestrator could not be reached
                self._check_clock("the request for a repository token")
                raise Failure(f"Could not get a repository token: {exc.message}") from None
            self.cache.add(token)
            detail["expiresAt"] = token.expires_at

        with self.step("context", "planning-context") as detail:
            try:
                self.state.context = self.api.planning_context()
            except ProviderError as exc:
                self._check_clock("the request for the planning context")
                raise Failure(f"Could not fetch the planning context: {exc.message}") from None
            detail["issueSource"] = self.state.context.get("issueSource")
        self._clone()
        self._setup()
        self.api.status("environment_ready")

        run = self._agent()
        if cfg.phase is Phase.PLANNING:
            return self._plan_result(run)
        if not self._commit():
            # gap analysis that found nothing missing: the PR stays as it is
            return self._success_body(
                comments=["🔎 Gap analysis found nothing missing; the pull request is unchanged."]
            )
        self._push()
        if cfg.phase is Phase.IMPLEMENTATION:
            self._open_pr()
        else:
            # the pull request already exists; the orchestrator knows its URL
            self.state.pr_number = cfg.pr_number
        verification = self._verify()
        return self._review(verification)

    # -- steps ------------------------------------------------------------------------------

    def _clone(self) -> None:
        cfg = self.cfg
        with self.step("clone") as detail:
            parent = cfg.workdir
            if not parent:
                parent = self.own_workdir = tempfile.mkdtemp(prefix="aiimpl-work-")
            os.makedirs(parent, exist_ok=True)
            dest = os.path.join(parent, cfg.repo)
            # a session restarted on the same machine finds its earlier clone: start clean
            shutil.rmtree(dest, ignore_errors=True)
            git = Git(dest, self.git_env, credentials=self.git_network_env, deadline=self.deadline,
                      stop=self.stop, clean=self._clean, refused=self.cache.last_refused)
            try:
                git.clone(cfg.clone_url, cfg.base_branch, dest)
            except GitError as exc:
                self._learn_tokens()
                self._check_clock("the clone")
                # git's "Cloning into '/tmp/…'..." comes first: the reason (and the first line of its
                # comment) is the error that follows
                said = "\n".join(line for line in exc.output.splitlines()
                                  if not line.startswith("Cloning into "))
                raise Failure(
                    self.redactor.text(f"git clone failed (exit {exc.code}): {procs.tail(said, 800)}"),
                    excerpt=self._excerpt(exc.output),
                ) from None
            self._learn_tokens()
            self.git = git
            self.state.clone_dir = dest
            ended: dict[str, Any] | None = None
            try:
                self.state.base_sha = git.head()
                if cfg.phase is not Phase.GAP_ANALYSIS:
                    # an earlier attempt may have left its work on the branch (turn limit, budget,
                    # stop, a pull request still open): continue from it instead of starting over
                    # and throwing it away; unless that work was merged already, or its pull
                    # request closed without a merge
                    tip = git.remote_branch_tip(cfg.branch)
                    ended = self._ended_pull_request(tip) if tip else None
                    # a branch with no history in common with the base (its history rewritten, the
                    # base's replaced) can be no pull request into it: started over too, not
                    # continued for GitHub to refuse its pull request once the work is done
                    unrelated = (tip is not None and ended is None
                                 and not git.related(tip, self.state.base_sha))
                    self.state.resumed = tip is not None and ended is None and not unrelated
                    self.state.replacing = tip if ended is not None or unrelated else None
                    git.checkout_new(cfg.branch, f"origin/{cfg.branch}" if self.state.resumed else None)
                self.state.start_sha = git.head()
            except GitError as exc:
                # a stop landing between the clone's git commands ends the next one
                self._check_clock("the clone")
                raise Failure(self.redactor.text(str(exc)), excerpt=self._excerpt(exc.output)) from None
            detail.update(
                branch=cfg.base_branch,
                commit=self.state.base_sha,
                resumedFrom=(cfg.branch if self.state.resumed else None),
            )
            if ended is not None:
                detail["mergedPrNumber" if ended.get("merged_at") else "closedPrNumber"] = ended["number"]
            elif self.state.replacing:
                detail["unrelatedBranch"] = cfg.branch

    def _ended_pull_request(self, tip: str) -> dict[str, Any] | None:
        """The pull request that merged ``AIIMPL_BRANCH`` into the base branch as it stands (at
        ``tip``), or else closed it unmerged as it stands, with none open; or ``None``.

        GitHub does not delete a merged pull request's branch unless the repository asks it to, and
        the branch of an issue triggered again has the same name. Continued, it would bring back the
        work already merged (squashed or rebased, its commits are not the base's: reverted since,
        that work would come back with the new pull request), on a tree as old as the branch. Such
        a branch is started over from the base branch, and the push replaces it.

        A pull request closed without a merge is work someone turned down (the orchestrator never
        closes one): the issue triggered again is a new attempt, not more of the same, so its
        branch is started over too. Its commits stay in the closed pull request (GitHub keeps them
        as ``refs/pull/N/head``). A branch that got commits since, or that has a pull request open
        (opened again), is continued. When GitHub cannot say, the branch is continued: it may hold
        an earlier attempt's work, not merged.
        """
        cfg = self.cfg

        def ended_pull_request(token: str) -> dict[str, Any] | None:
            ended = find_ended_pull_request(cfg.github_api_url, token, cfg.owner, cfg.repo,
                                            head=cfg.branch, base=cfg.base_branch, sha=tip,
                                            budget=self.github_budget)
            if ended is not None and not ended.get("merged_at") and find_open_pull_request(
                cfg.github_api_url, token, cfg.owner, cfg.repo, head=cfg.branch, base=cfg.base_branch,
                budget=self.github_budget,
            ) is not None:
                return None  # opened again: continued
            return ended

        try:
            ended = self._with_repo_token(ended_pull_request)
            if ended is None:
                return None
        except Interrupted as exc:
            kind = STOPPED_KINDS[exc.stopped]
            raise Failure(self._interruption(kind, "the clone"), kind=kind) from None
        except (PullRequestError, ProviderError) as exc:
            # stopped, or out of time, while the orchestrator (for the token) could not be reached
            self._check_clock("the clone")
            self.log(f"looking up the closed pull requests of {cfg.branch} failed ({exc.message}): "
                     "continuing from the branch")
            return None
        if ended is not None and ended.get("merged_at"):
            self.log(f"branch {cfg.branch} was merged with pull request #{ended['number']} as it stands "
                     f"(commit {tip[:7]}): starting over from {cfg.base_branch}")
        elif ended is not None:
            self.log(f"pull request #{ended['number']} of branch {cfg.branch} was closed without a merge "
                     f"as the branch stands (commit {tip[:7]}): starting over from {cfg.base_branch}; "
                     "the earlier commits stay in the pull request")
        return ended

    def _script(self, name: str, fallback: str | None) -> list[str] | None:
        assert self.state.clone_dir is not None
        path = os.path.join(self.state.clone_dir, ".ai-implement", name)
        if os.path.isfile(path):
            return ["bash", path]
        if fallback:
            return ["bash", "-c", fallback]
        return None

    def _verification_script(self) -> tuple[list[str] | None, bool]:
        """The verification command, and whether the cloned script was put in place for it (to be
        put back with :meth:`_restore_verification_script`): ``.ai-implement/verify.sh`` as the
        session cloned it (the base branch's commit), else the mapping's command, else ``None``.

        Never the agent's version: verification checks the agent's work, and an agent could
        rewrite the script to ``exit 0`` or delete it (verification was then skipped). git puts
        the cloned version in its place (a link stays a link, bytes stay bytes), where it runs as
        it would have, from the work tree. What a link points to is as the agent left it.
        """
        assert self.git is not None and self.state.clone_dir is not None
        mapping_command = ["bash", "-c", self.cfg.verify_command] if self.cfg.verify_command else None
        if not self.state.base_sha:
            return mapping_command, False
        # short local commands, run on a stop too: whether there is a script decides what a stop
        # before verification says
        soon = time.monotonic() + SAVE_MIN
        cloned = f"{self.state.base_sha}:{VERIFY_SCRIPT}"
        if self.git.run("cat-file", "-e", cloned, check=False, deadline=soon, ignore_stop=True).code != 0:
            return mapping_command, False  # the cloned commit has none
        placed = self.git.run("checkout", self.state.base_sha, "--", VERIFY_SCRIPT, check=False,
                              deadline=soon, ignore_stop=True)
        if placed.code != 0:
            # the agent left the path so that git cannot write it (a folder without write access):
            # verification fails saying so, never skipped
            why = f"the cloned {VERIFY_SCRIPT} could not be put in place: {self.git.clean(placed.output)}"
            return ["bash", "-c", 'echo "$1" >&2; exit 1', "verify", self.redactor.text(why)], False
        return ["bash", os.path.join(self.state.clone_dir, VERIFY_SCRIPT)], True

    def _restore_verification_script(self) -> None:
        """The work tree as the agent left it (committed): a tree kept for a person to attach, and
        the reviewer, find the agent's ``.ai-implement``, not the cloned script. Its failure is
        logged, not the run's (the pull request is open)."""
        assert self.git is not None and self.state.clone_dir is not None
        soon = time.monotonic() + SAVE_MIN
        folder = os.path.dirname(VERIFY_SCRIPT)
        try:
            self.git.run("reset", "-q", "--", folder, check=False, deadline=soon, ignore_stop=True)
            if self.git.run("cat-file", "-e", f"HEAD:{folder}", check=False, deadline=soon,
                            ignore_stop=True).code == 0:
                self.git.run("checkout", "--", folder, deadline=soon, ignore_stop=True)
            if self.git.run("cat-file", "-e", f"HEAD:{VERIFY_SCRIPT}", check=False, deadline=soon,
                            ignore_stop=True).code != 0:  # the agent removed it: the one placed goes
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(self.state.clone_dir, VERIFY_SCRIPT))
        except GitError as exc:
            self.log(f"putting the agent's {VERIFY_SCRIPT} back failed: {exc}")

    def _setup(self) -> None:
        with self.step("setup") as detail:
            argv = self._script("setup.sh", self.cfg.setup_command)
            if argv is None:
                detail["skipped"] = True
                return
            detail["source"] = "repository" if argv[1] != "-c" else "mapping"
            # the services setup starts in the background (a database for the tests) stay up for
            # the agent and the verification; they are ended with the session
            result = self._cleaned(procs.run(
                argv, cwd=self.state.clone_dir, env=self.child_env, deadline=self.deadline, stop=self.stop,
                keep_bytes=procs.KEEP_OUTPUT_BYTES, linger=True,
            ))
            self.services = result.group
            self._stopped(result, "setup")
            if result.code != 0:
                raise Failure(
                    self.redactor.text(
                        f"Setup failed (exit {result.code}): {procs.tail(result.output, 600)}"
                    ),
                    excerpt=self._excerpt(result.output),
                )

    def _agent(self) -> AgentRun:
        cfg = self.cfg
        ctx = self.state.context
        if cfg.phase is Phase.PLANNING:
            prompt = prompts.planning(ctx)
        elif cfg.phase is Phase.GAP_ANALYSIS:
            prompt = prompts.gap_analysis(ctx, pr_number=cfg.pr_number)
        else:
            prompt = prompts.implementation(ctx, branch=cfg.branch)
        with self.step("agent") as detail:
            self.state.agent_ran = True
            run = run_agent(
                cfg.agent_command,
                prompt,
                max_turns=cfg.max_turns,
                cwd=self.state.clone_dir or ".",
                env=self.child_env,
                state_dir=self.state_dir,
                deadline=self.deadline,
                stop=self.stop,
                clean=self._clean,
            )
            self.usage.add(run)
            detail.update(
                exitCode=run.exit_code,
                turns=run.turns,
                costUsd=run.cost_usd,
                seconds=round(run.process.seconds, 1),
            )
            self.log(f"agent output (end):\n{procs.tail(run.process.output, 2000)}")
            if run.stopped:
                where = self._save_work("the agent was stopped")
                kind = "stopped" if run.stopped == "signal" else "timed_out"
                what = (
                    f"The session was stopped by its runner ({self.stop_signal}) while the agent was running"
                    if kind == "stopped"
                    else f"the wall-clock budget of {cfg.lifetime}s ran out while the agent was running"
                )
                raise Failure(
                    self.redactor.text(f"{what}. {where}".strip()),
                    excerpt=self._excerpt(run.process.output),
                    kind=kind,
                )
            if run.failed:
                reason = run.failure_reason()
                if run.hit_max_turns:
                    where = self._save_work("the agent reached its turn limit")
                    reason = f"{reason}. {where}" if where else reason
                raise Failure(self.redactor.text(reason), excerpt=self._excerpt(run.process.output))
        return run

    @property
    def push_branch(self) -> str:
        """Implementation pushes to ``AIIMPL_BRANCH``; gap analysis to the pull request's own branch."""
        return self.cfg.base_branch if self.cfg.phase is Phase.GAP_ANALYSIS else self.cfg.branch

    def _has_work(self) -> bool:
        """Whether there is anything for a pull request: commits beyond the base (implementation,
        including an earlier attempt's), or beyond the starting point (gap analysis)."""
        assert self.git is not None
        since = self.state.start_sha if self.cfg.phase is Phase.GAP_ANALYSIS else self.state.base_sha
        return self.git.commits_since(since or "HEAD") > 0

    def _save_work(self, why: str) -> str:
        """Commit and push what the agent changed so far (planning keeps nothing); where it is."""
        if self.cfg.phase is Phase.PLANNING or self.git is None:
            return ""
        # the budget is spent (or the runner is stopping the session): saving the work gets its own
        # short allowance, which leaves the result time to be reported before the budget's end (a
        # runner stops the machine at its lifetime, and a result never reported is lost)
        now = time.monotonic()
        end = self.started + self.cfg.lifetime
        allowance = min(now + SAVE_ALLOWANCE, max(now + SAVE_MIN, end - REPORT_TIME))
        try:
            sha = self.git.commit_all(
                f"{self.cfg.issue_key}: work in progress ({why})", holds=self.redactor.scan,
                refuse=self._secrets_refused, since=self.state.start_sha, deadline=allowance,
                ignore_stop=True,
            )
            head = self.git.run("rev-parse", "HEAD", deadline=allowance, ignore_stop=True).stdout.strip()
            if sha is None and head == self.state.start_sha:
                return "There were no file changes to save."
            self.git.push(self.push_branch, replacing=self.state.replacing, deadline=allowance,
                          ignore_stop=True)
            self._learn_tokens()
            self.state.pushed = True
            self.state.replacing = None
            return f"Work so far is on branch `{self.push_branch}` (commit {head[:7]})."
        except GitError as exc:
            self._learn_tokens()
            return self.redactor.text(f"Saving the work so far failed: {exc}")

    @staticmethod
    def _secrets_refused(files: list[str]) -> str:
        """Why the agent's changes were not committed: ``files`` add the value of a secret the
        session knows (a ``.env`` the agent wrote, an environment dump). The values themselves: a
        URL with credentials in the changes (a test database's postgres://app:app@localhost) is no
        secret of the session."""
        return (f"The changes hold the value of a secret of the session (in {', '.join(sorted(files))}): "
                "nothing was committed or pushed. Keep secrets out of the repository and re-run")

    def _commit(self) -> bool:
        cfg = self.cfg
        assert self.git is not None
        with self.step("commit") as detail:
            issue = self.state.context.get("issue") or {}
            title = (issue.get("title") or "").strip()
            message = f"{cfg.issue_key}: {title}".rstrip(": ") + "\n\n"
            if issue.get("url"):
                message += f"{issue['url']}\n\n"
            message += f"Written by the coding agent of AI-Implement (job {cfg.job_id})."
            # pushed to the repository, as the pull request's title is sent to GitHub: masked the same
            message = self.redactor.text(message)
            try:
                self.git.commit_all(message, holds=self.redactor.scan, refuse=self._secrets_refused,
                                    since=self.state.start_sha)
                head = self.state.commit = self.git.head()
                has_work = self._has_work()
            except RefusedChanges as exc:
                raise Failure(exc.output, excerpt=exc.output) from None
            except GitError as exc:
                # stopped, or out of time, while committing (or right after it, between git's
                # commands)
                interrupted = self._interrupted_saving_work("the commit")
                if interrupted:
                    raise interrupted from None
                raise Failure(self.redactor.text(str(exc)), excerpt=self._excerpt(exc.output)) from None
            left_out = ""
            if self.git.left_out:
                names = ", ".join(f"`{path}`" for path in self.git.left_out[:10])
                left_out = self.redactor.text(
                    f"Not committed: {names}{' …' if len(self.git.left_out) > 10 else ''}: git "
                    "repositories of their own inside the work tree (cloned or created during the run), "
                    "whose files git would not add (add them as files, or as submodules)")
                detail["leftOut"] = [self.redactor.text(p) for p in self.git.left_out[:50]]
            if not has_work:
                if cfg.phase is Phase.GAP_ANALYSIS:
                    detail["skipped"] = True
                    return False
                raise Failure(
                    NO_CHANGES,
                    label=LogLabel.PR_NOT_FOUND,
                    excerpt="The agent finished without changing any file in the working tree."
                    + (f" {left_out}." if left_out else ""),
                )
            if left_out:
                self.state.notes.append(f"⚠️ {left_out}.")
            detail["commit"] = head
            return True

    def _push(self) -> None:
        assert self.git is not None
        with self.step("push") as detail:
            try:
                self.git.push(self.push_branch, replacing=self.state.replacing)
            except GitError as exc:
                self._learn_tokens()
                # stopped, or out of time, while pushing: the commit is there, and is pushed again
                # on the reserve rather than lost with the machine
                interrupted = self._interrupted_saving_work("the push")
                if interrupted:
                    raise interrupted from None
                raise Failure(
                    self.redactor.text(f"git push failed (exit {exc.code}): {procs.tail(exc.output, 800)}"),
                    excerpt=self._excerpt(exc.output),
                ) from None
            self._learn_tokens()
            self.state.pushed = True
            self.state.replacing = None
            detail["branch"] = self.push_branch

    def _open_pr(self) -> None:
        cfg = self.cfg
        issue = self.state.context.get("issue") or {}
        with self.step("pull-request") as detail:
            title = f"{cfg.issue_key}: {(issue.get('title') or '').strip()}".rstrip(": ")
            link = f"[{cfg.issue_key}]({issue['url']})" if issue.get("url") else cfg.issue_key
            # masked whole before it is cut or quoted: a cut through a secret, or a "> " put into
            # one the description wraps over two lines, would leave a piece no mask matches
            description = self.redactor.text((issue.get("description") or "").strip())
            if len(description) > 4000:
                description = description[:4000] + "…"
            body = f"Resolves {link}.\n\n"
            if description:
                body += "".join(f"> {line}\n" for line in description.splitlines()) + "\n"
            body += f"---\nOpened by AI-Implement (job {cfg.job_id}) from branch `{cfg.branch}`."

            def open_it(token: str) -> dict[str, Any]:
                try:
                    return open_pull_request(
                        cfg.github_api_url,
                        token,
                        cfg.owner,
                        cfg.repo,
                        title=self.redactor.text(title),
                        body=self.redactor.text(body),
                        head=cfg.branch,
                        base=cfg.base_branch,
                        budget=self.github_budget,
                    )
                except PullRequestError as refused:
                    if refused.status == 401:
                        raise  # the token: tried again with a fresh one
                    pr = self._open_pr_of_branch(token, refused)
                    detail["reused"] = True
                    return pr

            used: list[str] = []
            try:
                pr = self._with_repo_token(open_it, used)
            except Interrupted as exc:
                kind = STOPPED_KINDS[exc.stopped]
                raise self._interrupted_opening_pr(kind, used[-1] if used else None) from None
            except PullRequestError as exc:
                raise Failure(self.redactor.text(str(exc))) from None
            except ProviderError as exc:
                # stopped, or out of time, while the orchestrator could not be reached
                kind = self._interrupted()
                if kind:
                    raise self._interrupted_opening_pr(kind) from None
                raise Failure(
                    f"PR creation failed: could not get a repository token: {exc.message}"
                ) from None
            self.state.pr_number = pr["number"]
            self.state.pr_url = pr.get("html_url") or ""
            detail.update(prNumber=self.state.pr_number, prUrl=self.state.pr_url)
        self.api.status("pr_opened", prNumber=self.state.pr_number, prUrl=self.state.pr_url)

    def _interrupted_opening_pr(self, kind: str, token: str | None = None) -> Failure:
        """The failure of a run stopped, or out of time, while the pull request was being opened
        (or before GitHub answered): the work is pushed, and GitHub may have opened the pull
        request all the same (a request it had received, an answer given up on). It is looked
        for once, briefly, whatever the stop: one found goes with the result (its link is posted
        on the ticket), as one GitHub answered with would have."""
        pr = self._opened_all_the_same(token) if token is not None else None
        if pr is not None:
            self.state.pr_number, self.state.pr_url = pr["number"], pr.get("html_url") or ""
        what = self._interruption(kind, "the creation of the pull request")
        where = f"The work is on branch `{self.push_branch}` (commit {(self.state.commit or '')[:7]})."
        if pr is not None:
            where += f" Pull request #{pr['number']} is open for it."
        return Failure(self.redactor.text(f"{what}. {where}"), kind=kind)

    def _opened_all_the_same(self, token: str) -> dict[str, Any] | None:
        """The open pull request of the branch, asked for within :data:`PR_LOOKUP_AFTER_STOP`
        seconds of the time kept back to report, and never into its last :data:`REPORT_TIME`
        seconds (a stop does not cut it), or ``None``."""
        cfg = self.cfg
        # within the reserve, as saving the work is: the result must still go out before the end
        now = time.monotonic()
        end = self.started + cfg.lifetime - REPORT_TIME
        if end <= now:
            return None
        try:
            return find_open_pull_request(
                cfg.github_api_url, token, cfg.owner, cfg.repo, head=cfg.branch, base=cfg.base_branch,
                budget=Budget(min(now + PR_LOOKUP_AFTER_STOP, end), grace=0.0),
            )
        except (Interrupted, PullRequestError, ProviderError) as exc:
            self.log(f"looking for a pull request GitHub may have opened failed: {exc}")
            return None

    def _open_pr_of_branch(self, token: str, refused: PullRequestError) -> dict[str, Any]:
        """The pull request already open from ``AIIMPL_BRANCH`` into the base branch, when GitHub
        refused a new one with 422 because of it; otherwise ``refused`` is raised again.

        A re-run after ``review_failed`` (or after a failure or stop once the pull request was
        open) continues the same branch, whose pull request is still open: the new commits are
        already in it, and the run carries on with it as with one it opened. Closed and merged
        pull requests are never reused: GitHub accepts a new one then. GitHub (or a proxy in front
        of it) may also answer a 5xx, nothing, or a success without a readable pull request to one
        it created all the same: that one is looked up too. Only a refusal (any other 4xx) is not.
        """
        cfg = self.cfg
        if refused.status is not None and 400 <= refused.status < 500 and refused.status != 422:
            raise refused
        try:
            pr = find_open_pull_request(
                cfg.github_api_url, token, cfg.owner, cfg.repo, head=cfg.branch, base=cfg.base_branch,
                budget=self.github_budget,
            )
        except PullRequestError as exc:
            self.log(f"looking up the open pull request of {cfg.branch} failed: {exc.message}")
            raise refused from None
        if pr is None:
            raise refused
        self.log(f"branch {cfg.branch} already has pull request #{pr['number']} open: continuing with it")
        return pr

    def _verify(self) -> str | None:
        """Run the verification script; its (redacted) output, or ``None`` when there is none."""
        with self.step("verify", "verification") as detail:
            argv, placed = self._verification_script()
            try:
                if argv is None:
                    detail["skipped"] = True
                    return None
                interrupted = self._interrupted()
                if interrupted:
                    # stopped, or out of time, before it could start (while the pull request was
                    # being opened): no "Running verification script…" and "Verification failed"
                    # for a script that never ran; the job ends with its pull request, as after a
                    # stop during the script
                    detail.update(skipped=True, stopped=interrupted)
                    self.state.notes.append("⚠️ The verification script was not run (the session was stopped "
                                            "or ran out of time); please check the pull request yourself.")
                    return None
                self.api.status("verification_started")
                result = self._cleaned(procs.run(
                    argv, cwd=self.state.clone_dir, env=self.child_env, deadline=self.deadline,
                    stop=self.stop, keep_bytes=procs.KEEP_OUTPUT_BYTES,
                ))
            finally:
                if placed:
                    self._restore_verification_script()
            output = self._excerpt(result.output)
            detail.update(exitCode=result.code, passed=result.ok, stopped=result.stopped)
        if result.ok:
            self.api.status("verification_passed")
            return f"exit code 0\n{output}"
        # the pull request is open whatever happens here: a stopped script is a failed one
        # (the job still ends with its PR), never a lost run
        outcome = f"exit {result.code}" if result.stopped is None else self._stopped_by(result.stopped)
        tail = procs.tail(output, 500) or "no output"
        self.api.status("verification_failed", detail=f"{outcome}\n```\n{tail}\n```")
        return f"{outcome}\n{output}"

    def _diff_to_review(self, notes: list[str]) -> str | None:
        """What the branch changed, for the reviewer; ``None``, with the reason added to ``notes``,
        when there is no review now: the session was stopped or ran out of time (during
        verification, or while git read the diff), or git could not read it."""
        assert self.git is not None
        if not self._interrupted():
            since = self.state.start_sha if self.cfg.phase is Phase.GAP_ANALYSIS else self.state.base_sha
            try:
                return self.git.diff(since or "HEAD~1")  # masked by the Git's clean
            except GitError as exc:
                if not self._interrupted():
                    notes.append(self.redactor.text(f"⚠️ The post-push review could not run ({exc}); "
                                                    "please review the pull request yourself."))
                    return None
        # no second agent run on a machine that is going away
        notes.append("⚠️ The post-push review was skipped (the session was stopped or ran out of time); "
                     "please review the pull request yourself.")
        return None

    def _review(self, verification: str | None) -> dict[str, Any]:
        cfg = self.cfg
        assert self.git is not None
        notes: list[str] = list(self.state.notes)
        review: dict[str, Any] | None = None
        with self.step("review", "post-push-review") as detail:
            if not cfg.review_enabled:
                detail["skipped"] = True
            elif (diff := self._diff_to_review(notes)) is None:
                detail["skipped"] = True
            else:
                prompt = prompts.review(self.state.context, diff, verification)
                run = run_agent(
                    cfg.review_command,
                    prompt,
                    max_turns=cfg.review_max_turns,
                    cwd=self.state.clone_dir or ".",
                    env=self.child_env,
                    state_dir=self.state_dir,
                    name="review",
                    deadline=self.deadline,
                    stop=self.stop,
                    clean=self._clean,
                )
                self.usage.add(run)
                verdict = None if run.failed or run.stopped else prompts.parse_review(run.text)
                why = "its answer had no verdict"
                if verdict == (False, []):
                    # not approved, yet nothing named to fix: no verdict either (the job ended
                    # review_failed for "0 blockers", which nobody can act on)
                    verdict, why = None, "it did not approve the change but named no blocker"
                if verdict is None:
                    if run.stopped:
                        why = self._stopped_by(run.stopped)
                    elif run.failed:
                        why = run.failure_reason()
                    notes.append(
                        self.redactor.text(
                            f"⚠️ The post-push review could not decide ({why}); "
                            "please review the pull request yourself."
                        )
                    )
                    detail["verdict"] = None
                else:
                    approved, blockers = verdict
                    if len(blockers) > MAX_BLOCKERS:  # a reviewer gone astray: the result must still fit
                        blockers = [*blockers[:MAX_BLOCKERS], f"… and {len(blockers) - MAX_BLOCKERS} more"]
                    review = {"approved": approved, "blockers": [self.redactor.text(b) for b in blockers]}
                    detail.update(approved=approved, blockers=len(blockers))
        body = self._success_body(comments=notes)
        if review is not None:
            body["review"] = review
            if not review["approved"]:
                count = len(review["blockers"])
                body["error"] = f"the post-push review flagged {count} blocker{'s' if count != 1 else ''}"
        return body

    def _plan_result(self, run: AgentRun) -> dict[str, Any]:
        plan = run.text.strip()
        if not plan:
            raise Failure(
                "LLM invocation produced no plan: the agent's answer was empty",
                excerpt=self._excerpt(run.process.output),
            )
        return self._success_body(plan=self.redactor.text(plan))

    # -- the end ----------------------------------------------------------------------------

    def _usage_comment(self) -> str | None:
        parts = []
        if self.usage.turns is not None:
            parts.append(f"{self.usage.turns} turn{'s' if self.usage.turns != 1 else ''}")
        if self.usage.cost_usd is not None:
            parts.append(f"${self.usage.cost_usd:.2f}")
        if not parts:
            return None
        session = format_duration(time.monotonic() - self.started)
        return f"🤖 Agent usage: {' · '.join(parts)} (session {session})."

    def _success_body(self, *, comments: Sequence[str] = (), plan: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "outcome": "success",
            "phase": self.cfg.phase.value,
            "comments": [{"body": c} for c in comments],
        }
        if plan is not None:
            body["plan"] = plan
        if self.state.pr_url:
            body["prUrl"] = self.state.pr_url
        if self.state.pr_number:
            body["prNumber"] = self.state.pr_number
        return body

    def _on_failure(self, failure: Failure) -> dict[str, Any]:
        self.log(f"failed: {failure.reason}")
        reason = self.redactor.text(failure.reason)
        if failure.kind == "timed_out":
            self.api.status("session_timed_out", final=True, reason=reason)
        else:
            self.api.status("session_failed", final=True, reason=reason)
        # the reference has no result outcome for a timeout: a failure labelled with a timeout's
        # log label is one (the orchestrator names the timeout of the job's runner)
        label = LogLabel.MACHINE_TIMEOUT if failure.kind == "timed_out" else failure.label
        body: dict[str, Any] = {
            "outcome": "failure",
            "phase": self.cfg.phase.value,
            "comments": [],
            "error": reason,
            "logLabel": label.value,
        }
        if failure.excerpt:
            body["logExcerpt"] = self.redactor.text(failure.excerpt)
        if self.state.pr_url:
            body["prUrl"] = self.state.pr_url
        if self.state.pr_number:
            body["prNumber"] = self.state.pr_number
        return body

    def _cleanup(self) -> None:
        if self.own_workdir:
            shutil.rmtree(self.own_workdir, ignore_errors=True)
        elif self.state.clone_dir:
            shutil.rmtree(self.state.clone_dir, ignore_errors=True)

    def _keeps_work_tree(self, body: dict[str, Any]) -> bool:
        """Whether a person may attach after the session (``interactive``, or ``hybrid`` after a
        failure: the entrypoint holds the machine) and so finds the work tree as it was.

        Decided before the result is delivered (the tree goes before ``session_cleaned_up``, which
        must come before the result): a successful run whose result then cannot be delivered exits
        2 without its tree, so the entrypoint holds a ``hybrid`` machine on exit 1 alone."""
        if self.stop.is_set() or not self.environ.get(E.HELD_BY.name):
            # a stopped session is never held (the entrypoint ends with it), and without the
            # entrypoint (a GitHub Actions run) nothing holds the machine whatever the mode says
            return False
        mode = self.cfg.session_mode
        return mode == "interactive" or (mode == "hybrid" and body.get("outcome") != "success")

    def _finish(self, body: dict[str, Any]) -> int:
        self._learn_tokens()
        held = self._keeps_work_tree(body)
        if held:
            # the job's tokens go with the state directory below; the clone holds none
            kept = self.state.clone_dir or self.own_workdir
            self.log(f"the work tree is kept for a person to attach: {kept}")
        else:
            if procs.reap(self.services):
                self.log("ended what the setup script left running")
            self._cleanup()
        duration = time.monotonic() - self.started
        usage = self._usage_comment()
        if usage:
            body["comments"].append({"body": usage})
        if self.usage.cost_usd is not None:
            body["costUsd"] = round(self.usage.cost_usd, 6)
        if self.usage.turns is not None:
            body["turns"] = self.usage.turns
        body["durationSeconds"] = round(duration, 3)
        if not held:  # a held machine is not torn down now (the comment would tell a person
            # there is nothing left to attach to); the nonce stops working with the result below
            self.api.status("session_cleaned_up", duration=format_duration(duration))
        try:
            answer = self.api.result(body)
            self.log(f"result reported: {answer.get('status', 'recorded')}")
            code = 0 if body["outcome"] == "success" else 1
            if self.state.unsent_step is not None and self.cfg.progress_token:
                # the orchestrator answers again, and records a step reported after its job ended
                # (with the progress token: the nonce no longer opens /api/step-report), so the
                # step does not stay running beside the job's failure
                self.api.step(self.state.unsent_step)
        except ProviderError as exc:
            self.log(f"reporting the result failed: {exc.message}")
            code = 2
        finally:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        return code


def main(environ: Mapping[str, str] | None = None, out: TextIO | None = None) -> int:
    """Read the environment, run the session, return the exit code."""
    from ..errors import ConfigError

    environ = dict(os.environ if environ is None else environ)
    try:
        config = SessionConfig.from_environ(environ)
    except ConfigError as exc:
        print(f"aiimpl session: {exc.message}", file=out or sys.stderr)
        report_config_error(environ, exc.message, out or sys.stderr)
        return 2
    return Session(config, environ, out=out).run()


def report_config_error(environ: Mapping[str, str], message: str, out: TextIO) -> None:
    """End the job at once when the configuration is unusable but the orchestrator is reachable
    (a bad ``extraEnv`` value, say), instead of leaving it running until it times out."""
    url = (environ.get(E.URL.name) or "").strip().rstrip("/")
    token = (environ.get(E.RESULT_TOKEN.name) or "").strip()
    # the phase the orchestrator checks the result against is the token's (AIIMPL_PHASE may be
    # the very variable that is missing or wrong)
    phase = token_claim(token, "phase") or environ.get(E.PHASE.name)
    if not isinstance(phase, str) or phase not in {p.value for p in Phase}:
        return
    if not url or not token or url_problem(url) or not header_safe(token):
        return  # nowhere to report it (AIIMPL_URL or the token may be the very variable that is wrong)
    names = [n.strip() for n in (environ.get(E.SECRET_NAMES.name) or "").split(",")]
    names += [n for n in environ if E.LIKELY_SECRET_NAME.search(n)]
    # the nonce as the session reads it (a value from a file may end with a line break)
    nonce = (environ.get(E.NONCE.name) or "").strip()
    redactor = Redactor([environ.get(n, "") for n in names] + [nonce, token], url_credentials=True)
    logs.SECRETS.follow(redactor)
    api = Orchestrator(url, nonce, {"runner:result": token}, redactor)
    reason = f"the session configuration is invalid: {message}"
    if nonce:
        # /api/status opens only to the nonce: without it there is no "⚠️ Session failed" comment,
        # and the result alone ends the job (with its failure notice)
        api.status("session_failed", reason=reason)
    try:
        api.result(
            {
                "outcome": "failure",
                "phase": phase,
                "comments": [],
                "error": reason,
                "logLabel": LogLabel.SESSION_FAILED.value,
            }
        )
    except ProviderError as exc:
        print(f"aiimpl session: reporting the failure failed: {redactor.text(exc.message)}", file=out)
