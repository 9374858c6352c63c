"""The git operations of the session, run as child processes with the credential helper.

Git's output is returned to the caller, which redacts it before it goes anywhere.
"""

from __future__ import annotations

import codecs
import os
import re
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from . import procs
from .redact import Scan


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
#: tries of a command (or a GitHub call) while GitHub refuses each token it is given: revoked
#: before their expiry (the App suspended or reinstalled), every orchestrator process's cached
#: token is refused, and the next request for a token may reach another process with its own
REFUSED_TOKEN_TRIES = 4


class RefusedChanges(GitError):
    """The staged changes were not committed (they hold what must not leave the machine)."""

    def __str__(self) -> str:
        return self.output


#: how much of a patch the secret check reads at a time (a file of gigabytes is read, not held)
READ_BYTES = 1 << 20


#: bytes read past the end of what is kept of a diff, and masked with it: a secret the read cuts
#: runs less far into what was read (a multi-line one is masked line by line too)
DIFF_MARGIN = 64 * 1024
#: a line that starts a file's part of a patch, or a hunk of it
_MARK = re.compile(rb"^(?:diff --git |@@)", re.M)
#: an added line's text (without its "+")
_ADDED = re.compile(rb"^\+([^\n]*\n?)", re.M)


#: what of a commit ``git log`` writes for the secret check: its author, its committer, its message
COMMIT_TEXT = "%an <%ae>%n%cn <%ce>%n%B"
#: how a refusal names the messages of the commits the agent made itself
COMMIT_MESSAGES = "the message of a commit the agent made"


def holds_text(stream: BinaryIO, scan: Scan) -> bool:
    """Whether ``scan`` finds something in the text of ``stream``, read a part at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    while part := stream.read(READ_BYTES):
        if scan.feed(decoder.decode(part)):
            return True
    scan.feed(decoder.decode(b"", final=True))
    return scan.end()


def header_path(line: bytes) -> str:
    """The file a ``diff --git a/… b/…`` line is about (its ``b/`` side), as it is named: git
    quotes a name with a quote, a backslash or a control character in it C-style (``"b/a\\tb"``)."""
    rest = line[len(b"diff --git ") :].rstrip(b"\n")
    quoted = rest.endswith(b'"') and rest.rfind(b' "b/')
    if quoted and quoted > 0:
        name = codecs.escape_decode(rest[quoted + 4 : -1])[0]
    else:
        # "a/NAME b/NAME": a name may hold " b/" itself (no renames: both sides are the same name)
        size = (len(rest) - 5) // 2
        same = rest[2 : 2 + size] == rest[-size:] and rest[2 + size : 5 + size] == b" b/"
        name = rest[-size:] if size > 0 and same else rest.split(b" b/", 1)[-1]
    return name.decode("utf-8", "replace")


def files_adding(patch: BinaryIO, holds: Callable[[], Scan]) -> list[str]:
    """The files whose added lines, in a ``git diff --unified=0`` patch (or several, one after
    another), ``holds`` finds something in: each file's added lines are given to a fresh scan
    from ``holds()`` as their text, a line break after each, a part at a time, a file named twice
    (changed by two commits) read twice. The patch is read from a file, never held whole."""
    found: list[str] = []
    path = ""
    scan: Scan | None = None
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pending: list[bytes] = []
    # the bytes in ``pending``, kept as they come: summing the list at each hunk (a part of its
    # own) made a patch of many one-line hunks quadratic (1 MB of them took four minutes)
    pending_bytes = 0
    in_hunk = False  # past the file's header (its "--- a/" and "+++ b/" lines), in its hunks
    continued: bool | None = None  # the last read ended inside a line: whether that line is added

    def take(data: bytes, last: bool = False) -> None:
        nonlocal pending_bytes
        if scan is None or scan.found:
            return
        if data:
            pending.append(data)
            pending_bytes += len(data)
        if last or pending_bytes >= READ_BYTES:
            scan.feed(decoder.decode(b"".join(pending), final=last))
            pending.clear()
            pending_bytes = 0

    def close() -> None:
        nonlocal scan
        take(b"", last=True)
        if scan is not None and scan.end() and path not in found:
            found.append(path)
        decoder.reset()
        scan = None

    while block := patch.read(READ_BYTES):
        if not block.endswith(b"\n"):  # the rest of its last line (a line longer than a read: a part)
            block += patch.readline(READ_BYTES)
        at = 0
        if continued is not None:
            end = block.find(b"\n") + 1 or len(block)
            if continued:
                take(block[:end])
            at = end
            if block.endswith(b"\n") or end < len(block):
                continued = None
        for mark in _MARK.finditer(block, at):
            if in_hunk:
                take(b"".join(_ADDED.findall(block, at, mark.start())))
            end = block.find(b"\n", mark.start()) + 1 or len(block)
            if block.startswith(b"diff --git ", mark.start()):
                close()
                path = header_path(block[mark.start() : end])
                scan, in_hunk = holds(), False
            else:
                in_hunk = True
            at = end
        if continued is None and not block.endswith(b"\n"):  # its last line goes on in the next read
            start = block.rfind(b"\n") + 1
            continued = in_hunk and start >= at and block.startswith(b"+", start)
        if in_hunk:
            take(b"".join(_ADDED.findall(block, at)))
    close()
    return found


class Git:
    """Runs git in one working tree with a fixed environment.

    :param env: the environment of local commands (identity; no credentials).
    :param credentials: the environment of the commands that reach the remote (the credential
        helper); local commands, whose filters a repository may define, never see it.
    :param deadline: ``time.monotonic()`` after which running commands are stopped.
    :param clean: applied to the whole output of a failed command before :class:`GitError` holds
        it (the session's redaction): its message and excerpts are cut from the masked text, so a
        cut never leaves a part of a secret behind.
    :param refused: the token the credential helper was last told was refused (its ``erase``),
        or ``None``: a command that reaches the remote and fails having had a token refused is run
        once more (see :meth:`run`).
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
        refused: Callable[[], str | None] | None = None,
    ) -> None:
        self.cwd = cwd
        self.refused = refused
        self.env = dict(env)
        self.network_env = dict(credentials) if credentials is not None else dict(env)
        self.deadline = deadline
        self.stop = stop
        self.clean = clean or (lambda text: text)
        #: the nested repositories the last :meth:`commit_all` left out
        self.left_out: list[str] = []

    def run(
        self,
        *args: str,
        cwd: str | None = None,
        check: bool = True,
        deadline: float | None = None,
        ignore_stop: bool = False,
        config: tuple[str, ...] = (),
    ) -> procs.ProcessResult:
        """``git <args>`` (``config``: ``name=value`` settings for this command alone).

        A command that reaches the remote and fails after GitHub refused its token (revoked
        before its expiry: git tells the credential helper to drop it, then gives up) is run again,
        with the fresh token the helper then fetches, while each try has a new token refused (up to
        :data:`REFUSED_TOKEN_TRIES` in all). It did nothing: a clone refused removes what it made,
        a push or fetch refused sent nothing.
        """
        settings = [arg for setting in config for arg in ("-c", setting)]
        network = args[0] in NETWORK_COMMANDS
        refused = self.refused() if network and self.refused is not None else None
        for _ in range(REFUSED_TOKEN_TRIES):
            result = procs.run(
                ["git", *SAFE_CONFIG, *settings, *args],
                cwd=cwd or self.cwd,
                env=self.network_env if network else self.env,
                deadline=deadline if deadline is not None else self.deadline,
                stop=None if ignore_stop else self.stop,
                keep_bytes=procs.KEEP_OUTPUT_BYTES,
            )
            if result.ok or result.stopped is not None or not network or self.refused is None:
                break
            newly_refused = self.refused()
            if newly_refused == refused:
                break
            refused = newly_refused
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

    def related(self, one: str, other: str) -> bool:
        """Whether two commits share history (a merge base): a branch without one into the other
        can be no pull request (GitHub: "no history in common")."""
        found = self.run("merge-base", one, other, check=False)
        if found.code not in (0, 1):
            raise GitError("merge-base", found.code, self.clean(found.output))
        return found.code == 0

    def commits_since(self, since: str) -> int:
        return int(self.run("rev-list", "--count", f"{since}..HEAD").stdout.strip() or 0)

    def has_changes(self) -> bool:
        return bool(self.run("status", "--porcelain").stdout.strip())

    def commit_all(
        self,
        message: str,
        *,
        holds: Callable[[], Scan] | None = None,
        refuse: Callable[[list[str]], str] | None = None,
        since: str | None = None,
        **kw: object,
    ) -> str | None:
        """Stage everything and commit; ``None`` when there was nothing to commit.

        :param holds: a fresh scan for each staged file's added lines (:func:`files_adding`); the
            files it finds something in are unstaged, :class:`RefusedChanges` raised with
            ``refuse(files)``.
        :param since: with ``holds``, the commit the work started from: the lines that commits
            made since (by an agent that commits on its own) add are read too, since the push
            sends them along.
        """
        # a git repository of its own inside the work tree (a clone, a `git init` of the agent's)
        # is left out: added, it failed the whole add (one without a commit) or became a pointer to
        # a commit no remote has, its files in no pull request
        self.left_out = self.nested_repositories(**kw)
        leave_out = [f":(exclude,literal,top){path}" for path in self.left_out]
        self.run("add", "--all", *(["--", ".", *leave_out] if leave_out else []), **kw)  # type: ignore[arg-type]
        staged = self.run("diff", "--cached", "--quiet", check=False, **kw)  # type: ignore[arg-type]
        if holds is not None:
            files = self._files_adding(holds, since, **kw)
            if files:
                self.run("reset", "-q", **kw)  # type: ignore[arg-type]
                raise RefusedChanges("commit", 1, refuse(files) if refuse else ", ".join(files))
        if staged.code == 0:
            return None
        self.run("commit", "--no-verify", "-q", "-m", message, **kw)  # type: ignore[arg-type]
        return self.run("rev-parse", "HEAD", **kw).stdout.strip()  # type: ignore[arg-type]

    def nested_repositories(self, **kw: object) -> list[str]:
        """The untracked git repositories inside the work tree (git lists each as ``path/``)."""
        listed = self.run("ls-files", "--others", "--exclude-standard", "-z", **kw)  # type: ignore[arg-type]
        return [entry[:-1] for entry in listed.stdout.split("\0") if entry.endswith("/")]

    def _files_adding(self, holds: Callable[[], Scan], since: str | None, **kw: object) -> list[str]:
        # written to a file by git and read from it a part at a time: a staged file of gigabytes
        # (a dataset, a build's output) would take the session's memory many times over as text
        # (no renames: a file moved is read as added, and a header names the same file twice)
        plain = ("--text", "--no-color", "--no-ext-diff", "--no-renames", "--unified=0")
        # (names as they are, not with their letters beyond ASCII as octal escapes: they are said)
        kw = {**kw, "config": ("core.quotePath=false",)}
        with tempfile.TemporaryDirectory(prefix="aiimpl-check-") as tmp:
            staged, commits = os.path.join(tmp, "staged.patch"), os.path.join(tmp, "commits.patch")
            self.run("diff", "--cached", *plain, f"--output={staged}", **kw)  # type: ignore[arg-type]
            patches = [staged]
            files: list[str] = []
            if since:
                self.run("log", "--format=", "--patch", *plain, f"--output={commits}", f"{since}..HEAD",
                         **kw)  # type: ignore[arg-type]
                patches.append(commits)
                # their messages and names go with them too
                messages = os.path.join(tmp, "messages.txt")
                self.run("log", f"--format={COMMIT_TEXT}", f"--output={messages}", f"{since}..HEAD",
                         **kw)  # type: ignore[arg-type]
                with open(messages, "rb") as text:
                    if holds_text(text, holds()):
                        files.append(COMMIT_MESSAGES)
            for name in patches:
                with open(name, "rb") as patch:
                    files += [f for f in files_adding(patch, holds) if f not in files]
            return files

    def push(self, branch: str, *, replacing: str | None = None, **kw: object) -> None:
        """Push ``HEAD`` to ``branch``. Never forced: the branch may hold an earlier attempt's work,
        which the session continues; but ``replacing``, the commit of a branch whose work was merged
        already (or whose pull request was closed without a merge), is replaced, and only while the
        branch is still at it (``--force-with-lease``)."""
        lease = [f"--force-with-lease=refs/heads/{branch}:{replacing}"] if replacing else []
        self.run("push", *lease, "origin", f"HEAD:refs/heads/{branch}", **kw)  # type: ignore[arg-type]

    def diff(self, since: str, limit: int = 60000) -> str:
        """What the branch changed since it left ``since``'s line (three dots: from their merge
        base), never the base's own later commits shown as undone: its first ``limit`` characters,
        masked by ``clean``.

        Only the start git writes to a file is read (a diff of gigabytes would take the session's
        memory), with a margin past ``limit`` that is masked and then cut off with the rest: a
        cut never leaves a part of a secret behind."""
        with tempfile.TemporaryDirectory(prefix="aiimpl-diff-") as tmp:
            name = os.path.join(tmp, "diff.patch")
            self.run("diff", "--stat", "--patch", f"--output={name}", f"{since}...HEAD")
            with open(name, "rb") as out:
                start = out.read(4 * limit + DIFF_MARGIN)  # (up to four bytes a character)
                cut = bool(out.read(1))
        text = self.clean(start.decode("utf-8", "replace"))
        if cut:  # the margin's end may hold the start of a secret the read cut: never kept (the
            # margin's bytes are as many characters at least as a quarter of them)
            text = text[: max(0, len(text) - DIFF_MARGIN // 4)]
        return text if len(text) <= limit and not cut else text[:limit] + "\n… (diff truncated)\n"
