"""The git operations of the session, run as child processes with the credential helper.

Git's output is returned to the caller, which redacts it before it goes anywhere.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from . import procs


@dataclass
class GitError(Exception):
    """A git command failed: its subcommand, exit code and output."""

    command: str
    code: int
    output: str

    def __str__(self) -> str:
        return f"git {self.command} failed (exit {self.code}): {procs.tail(self.output, 1500)}"


#: Code of the repository, or written by the agent, never runs inside the session's own git
#: commands: no hooks (a post-commit or pre-push hook would run with the push's credentials at
#: hand, and a repository's pre-push checks would fail the push), no filesystem monitor.
SAFE_CONFIG = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")
#: the commands that talk to the remote: the only ones given the credential helper
NETWORK_COMMANDS = frozenset({"clone", "fetch", "push"})


class RefusedChanges(GitError):
    """The staged changes were not committed (they hold what must not leave the machine)."""

    def __str__(self) -> str:
        return self.output


def added_lines(patch: str) -> dict[str, str]:
    """The lines a ``git diff --unified=0`` patch adds, per file (binary files as git prints them)."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in patch.splitlines():
        if line.startswith("diff --git "):
            path = line.split(" b/", 1)[-1]
            current = out.setdefault(path, [])
        elif current is not None and line.startswith("+") and not line.startswith("+++ "):
            current.append(line[1:])
    return {path: "\n".join(lines) for path, lines in out.items()}


class Git:
    """Runs git in one working tree with a fixed environment.

    :param env: the environment of local commands (identity; no credentials).
    :param credentials: the environment of the commands that reach the remote (the credential
        helper); local commands, whose filters a repository may define, never see it.
    :param deadline: ``time.monotonic()`` after which running commands are stopped.
    :param clean: applied to the whole output of a failed command before :class:`GitError` holds
        it (the session's redaction): its message and excerpts are cut from the masked text, so a
        cut never leaves a part of a secret behind.
    """

    def __init__(
        self,
        cwd: str,
        env: Mapping[str, str],
        *,
        credentials: Mapping[str, str] | None = None,
        deadline: float | None = None,
        stop: threading.Event | None = None,
        clean: Callable[[str], str] | None = None,
    ) -> None:
        self.cwd = cwd
        self.env = dict(env)
        self.network_env = dict(credentials) if credentials is not None else dict(env)
        self.deadline = deadline
        self.stop = stop
        self.clean = clean or (lambda text: text)

    def run(
        self,
        *args: str,
        cwd: str | None = None,
        check: bool = True,
        deadline: float | None = None,
        ignore_stop: bool = False,
    ) -> procs.ProcessResult:
        result = procs.run(
            ["git", *SAFE_CONFIG, *args],
            cwd=cwd or self.cwd,
            env=self.network_env if args[0] in NETWORK_COMMANDS else self.env,
            deadline=deadline if deadline is not None else self.deadline,
            stop=None if ignore_stop else self.stop,
        )
        # a stopped command's answer means nothing, even where a failure is an answer (check=False)
        if result.stopped is not None or (check and not result.ok):
            code = result.code if result.stopped is None else procs.NOT_STARTED
            raise GitError(args[0], code, self.clean(result.output) or f"stopped ({result.stopped})")
        return result

    def clone(self, url: str, branch: str, dest: str) -> None:
        self.run("clone", "--no-tags", "--branch", branch, "--", url, dest, cwd=".")

    def head(self) -> str:
        return self.run("rev-parse", "HEAD").stdout.strip()

    def checkout_new(self, branch: str, start: str | None = None) -> None:
        self.run("checkout", "-q", "-B", branch, *([start] if start else []))

    def remote_branch_tip(self, branch: str) -> str | None:
        """The commit ``branch`` is at on the remote (seen by the clone, which fetched every
        branch), or ``None`` when the remote has no such branch."""
        result = self.run("rev-parse", "--verify", "--quiet", f"refs/remotes/origin/{branch}^{{commit}}",
                          check=False)
        if result.code != 0:
            return None
        return result.stdout.strip() or None

    def remote_branch_exists(self, branch: str) -> bool:
        """Whether the remote has ``branch``."""
        return self.remote_branch_tip(branch) is not None

    def commits_since(self, since: str) -> int:
        return int(self.run("rev-list", "--count", f"{since}..HEAD").stdout.strip() or 0)

    def has_changes(self) -> bool:
        return bool(self.run("status", "--porcelain").stdout.strip())

    def commit_all(
        self,
        message: str,
        *,
        refuse: Callable[[dict[str, str]], str | None] | None = None,
        since: str | None = None,
        **kw: object,
    ) -> str | None:
        """Stage everything and commit; ``None`` when there was nothing to commit.

        :param refuse: given the lines each staged file adds (path → text), a reason not to commit
            them; the files are then unstaged and :class:`RefusedChanges` raised.
        :param since: with ``refuse``, the commit the work started from: the lines that commits
            made since (by an agent that commits on its own) add are read by ``refuse`` too, since
            the push sends them along.
        """
        self.run("add", "--all", **kw)  # type: ignore[arg-type]
        staged = self.run("diff", "--cached", "--quiet", check=False, **kw)  # type: ignore[arg-type]
        if refuse is not None:
            plain = ("--text", "--no-color", "--no-ext-diff", "--unified=0")
            patch = self.run("diff", "--cached", *plain, **kw).stdout  # type: ignore[arg-type]
            if since:
                commits = self.run("log", "--format=", "--patch", *plain, f"{since}..HEAD",
                                   **kw)  # type: ignore[arg-type]
                patch += "\n" + commits.stdout
            reason = refuse(added_lines(patch))
            if reason:
                self.run("reset", "-q", **kw)  # type: ignore[arg-type]
                raise RefusedChanges("commit", 1, reason)
        if staged.code == 0:
            return None
        self.run("commit", "--no-verify", "-q", "-m", message, **kw)  # type: ignore[arg-type]
        return self.run("rev-parse", "HEAD", **kw).stdout.strip()  # type: ignore[arg-type]

    def push(self, branch: str, *, replacing: str | None = None, **kw: object) -> None:
        """Push ``HEAD`` to ``branch``. Never forced: the branch may hold an earlier attempt's work,
        which the session continues; but ``replacing``, the commit of a branch whose work was merged
        already (or whose pull request was closed without a merge), is replaced, and only while the
        branch is still at it (``--force-with-lease``)."""
        lease = [f"--force-with-lease=refs/heads/{branch}:{replacing}"] if replacing else []
        self.run("push", *lease, "origin", f"HEAD:refs/heads/{branch}", **kw)  # type: ignore[arg-type]

    def diff(self, since: str, limit: int = 60000) -> str:
        # what the branch changed since it left ``since``'s line (three dots: from their merge
        # base), never the base's own later commits shown as undone
        # masked whole, then cut: a cut never leaves a part of a secret behind
        text = self.clean(self.run("diff", "--stat", "--patch", f"{since}...HEAD").stdout)
        return text if len(text) <= limit else text[:limit] + "\n… (diff truncated)\n"
