"""The workflow templates this plugin ships, and installing them in a repository.

``sync-workflows`` writes each template to ``.github/workflows/<file>`` on the mapping's default
branch through the contents API: created when missing, updated (with the current blob sha) when
different, left alone when the decoded content is already the same, so running it twice commits once.

What a workflow installs before the session is written into it too: the session program (by default
the wheel of ``aiimpl-core`` this orchestrator serves itself, at the URL of its sha256 and pinned to
it, so a sync changes what the sessions run and every run of a job runs the same program) and the
agent CLI. The sync has the core keep that wheel (:func:`aiimpl_core.session_package.pin`), so the
workflows it wrote still install it after a deploy that serves another, until the next sync.
The settings that choose otherwise are checked here: each word becomes one shell word in single
quotes, and no value can leave its line of the workflow, its shell word, or reach GitHub's ``${{ }}``
expressions.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from importlib import resources
from urllib.parse import urlsplit

from aiimpl_core import session_package
from aiimpl_core.errors import ConfigError, ProviderConfigError, ProviderError
from aiimpl_core.github import Repo, github_message
from aiimpl_core.types import MappingView, SyncResult

from . import config

WORKFLOWS_DIR = ".github/workflows"
#: how ``aiimpl check`` names each template's line (followed by the repository)
LABELS = {
    "ai-implement.yml": "workflow",
    "ai-implement-gap-fill.yml": "gap-fill workflow",
    "ai-implement-planning.yml": "planning workflow",
}


#: the job timeout the shipped templates carry: the default session lifetime (60 minutes) and the
#: 10 minutes past it the reconciler waits before it stops an overrunning run itself
TEMPLATE_TIMEOUT = "timeout-minutes: 70"


#: the shipped templates' install lines (the rest of each line is what they install as shipped)
PIP_INSTALL = "python -m pip install --upgrade "
NPM_INSTALL = "npm install --global "
TEMPLATE_SESSION_LINE = re.compile(rf"^( *){re.escape(PIP_INSTALL)}aiimpl-core\n", re.M)
TEMPLATE_AGENT_LINE = re.compile(rf"^( *){re.escape(NPM_INSTALL)}@anthropic-ai/claude-code\n", re.M)
#: one word of an install setting: a requirement, a version range, a URL, an option. Never a quote,
#: ``$``, a backquote, a backslash, a brace, a parenthesis, ``|``, ``;`` or a control character
WORD_RE = re.compile(r"[A-Za-z0-9._~^*+=!<>,:/?#&%@\[\]-]+")
#: a URL in a word, from its scheme (a scheme is short: unbounded, each letter of a long word was
#: tried against the rest of it, quadratic on the setting)
URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}://[^ ]*")


@dataclass(frozen=True)
class Installs:
    """What a workflow installs before the session: pip's arguments for the session program and
    npm's for the agent (none: no agent is installed); ``pinned``: the wheel of this orchestrator
    the session program's requirement pins (none: ``AIIMPL_GHA_SESSION_PACKAGE`` names another)."""

    session: tuple[str, ...]
    agent: tuple[str, ...] = ()
    pinned: session_package.SessionPackage | None = field(default=None, compare=False, repr=False)

    def render(self, text: str) -> str:
        """A template's text with its install lines for these packages, each word shell-quoted."""
        session = " ".join(shlex.quote(w) for w in self.session)
        text = TEMPLATE_SESSION_LINE.sub(lambda m: f"{m[1]}{PIP_INSTALL}{session}\n", text)
        agent = " ".join(shlex.quote(w) for w in self.agent)
        return TEMPLATE_AGENT_LINE.sub(lambda m: f"{m[1]}{NPM_INSTALL}{agent}\n" if agent else "", text)


def installed(text: str) -> Installs | None:
    """What a workflow file installs, read from its install lines; ``None`` when it has no session
    install line that reads as shell words."""
    session = re.search(rf"^ *{re.escape(PIP_INSTALL)}(.+)$", text, re.M)
    agent = re.search(rf"^ *{re.escape(NPM_INSTALL)}(.+)$", text, re.M)
    if session is None:
        return None
    try:
        return Installs(tuple(shlex.split(session[1])), tuple(shlex.split(agent[1])) if agent else ())
    except ValueError:
        return None


#: what to set instead when the session program cannot be served by this orchestrator
SET_INSTEAD = (f"or set {config.SESSION_PACKAGE} to what the workflows install as the session program "
               "(a wheel URL, git+https://…@<commit>, or a requirement on your own index)")


def core_package() -> session_package.SessionPackage:
    """The wheel of the session program this orchestrator serves (:mod:`aiimpl_core.session_package`).

    :raises ProviderConfigError: when it cannot be built (no installed distribution to read its
        version and metadata from).
    """
    try:
        return session_package.current()
    except ConfigError as exc:
        raise ProviderConfigError(f"{exc.message}: {SET_INSTEAD.removeprefix('or ')}",
                                  provider="github-actions") from None


def core_requirement(public_url: object) -> str:
    """The session program this orchestrator serves itself, at the URL of the wheel's sha256 and
    pinned to it (pip checks it):
    ``aiimpl-core @ <public URL>/runner/session-package/<hash>/<wheel>#sha256=<hash>``.

    :param public_url: ``AIIMPL_PUBLIC_URL``, the URL runners reach this orchestrator at (the one
        the sessions call back).
    :raises ProviderConfigError: as :func:`core_install`.
    """
    return core_install(public_url)[0]


def core_install(public_url: object) -> tuple[str, session_package.SessionPackage]:
    """:func:`core_requirement`, and the wheel it pins.

    :raises ProviderConfigError: when that URL is not set, or not one a workflow can install from
        (an ``http://`` or ``https://`` URL with a host, no credentials, query or fragment), or as
        :func:`core_package`.
    """
    name = config.PUBLIC_URL
    url = str(public_url or "").strip().rstrip("/")
    why = "the workflows install the session program from this orchestrator"
    if not url:
        raise ProviderConfigError(
            f"{name} is not set: {why}; set it to the URL runners reach this orchestrator at, {SET_INSTEAD}",
            provider="github-actions",
        )
    try:
        parts = urlsplit(url)
        credentials = parts.username is not None or parts.password is not None
        ok = (parts.scheme.lower() in ("http", "https") and bool(parts.hostname) and (parts.port or 1) > 0
              and not parts.query and not parts.fragment and "#" not in url and "?" not in url
              and WORD_RE.fullmatch(url) is not None)
    except ValueError:  # an unbalanced IPv6 bracket, a port that is not a number or out of range
        credentials, ok = False, False
    if credentials:
        # (never said: the URL's credentials are what must not reach the workflow file)
        raise ProviderConfigError(
            f"{name} must not carry credentials when {why}: the workflow file is readable by anyone who "
            f"can read the repository; {SET_INSTEAD}",
            provider="github-actions",
        )
    if not ok:
        raise ProviderConfigError(
            f"{name} must be an http:// or https:// URL with a host, without a query, a fragment, quotes, "
            f"$, backquotes, backslashes, braces or parentheses, when {why}; {SET_INSTEAD}",
            provider="github-actions",
        )
    package = core_package()
    pin = session_package.Pin(package.filename, package.sha256)
    return f"{config.SESSION_DISTRIBUTION} @ {pin.url(url)}", package


@dataclass(frozen=True)
class PinnedWheel:
    """A wheel of this orchestrator a workflow's session program requirement pins: where it is
    served (the path after ``/runner/session-package/``: ``<hash>/<file>``, or ``<file>`` as a
    wheel URL set by hand names it) and the sha256 pip checks."""

    path: str
    sha256: str

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def served(self) -> bool:
        """Whether this orchestrator serves these bytes at that path (running or kept)."""
        package = session_package.find(self.path)
        return package is not None and package.sha256 == self.sha256


def pinned_wheel(session: tuple[str, ...], public_url: object) -> PinnedWheel | None:
    """The wheel of this orchestrator that a workflow's session program words pin, as a sync
    writes them under ``public_url``; ``None`` for anything else (another requirement, another URL)."""
    url = str(public_url or "").strip().rstrip("/")
    if len(session) != 1 or not url:
        return None
    found = re.fullmatch(
        rf"{re.escape(config.SESSION_DISTRIBUTION)} ?@ ?{re.escape(url + session_package.URL_PATH)}"
        r"((?:[0-9a-f]{64}/)?[^/#?\s]+)#sha256=([0-9a-f]{64})",
        session[0],
    )
    return PinnedWheel(found[1], found[2]) if found else None


def install_words(setting: str, value: str) -> tuple[str, ...]:
    """The words of an install setting, each checked.

    ``name @ url`` is read as ``name@url`` (one requirement). A URL may carry no credentials: the
    workflow file is readable by anyone who can read the repository.

    :raises ProviderConfigError: naming the setting and what is wrong.
    """
    words = re.sub(r" +@ +", "@", value.strip(" ")).split(" ")
    words = [w for w in words if w]
    for word in words:
        if not WORD_RE.fullmatch(word):
            bad = sorted({c for c in word if not WORD_RE.fullmatch(c)})
            shown = ", ".join(repr(c) for c in bad)
            raise ProviderConfigError(
                f"{setting} must be one line of package specs and options separated by spaces, without "
                f"quotes, $, backquotes, backslashes, braces, parentheses, | or ; (it holds {shown})",
                provider="github-actions",
            )
        for found in URL_RE.finditer(word):  # (``name@git+https://…`` holds one after its name)
            try:
                url = urlsplit(found[0])
                http = url.scheme.rsplit("+", 1)[-1].lower() in ("http", "https")
                credentials = url.password is not None or (http and url.username is not None)
            except ValueError:
                raise ProviderConfigError(f"{setting} holds a URL that is not valid",
                                          provider="github-actions") from None
            if credentials:
                raise ProviderConfigError(
                    f"{setting} must not carry credentials in a URL: the workflow file is readable by "
                    "anyone who can read the repository",
                    provider="github-actions",
                )
    if not any(not w.startswith("-") for w in words):
        raise ProviderConfigError(f"{setting} names nothing to install", provider="github-actions")
    return tuple(words)


def timeout_minutes(lifetime_seconds: int) -> int:
    """The workflow job's ``timeout-minutes`` for a session lifetime: the lifetime, rounded up to a
    minute, and 10 minutes more (70 for the default hour). GitHub ends the job there as
    ``cancelled``, which the backend reads as the session's timeout once its lifetime has passed."""
    return -(-int(lifetime_seconds) // 60) + 10


@dataclass(frozen=True)
class WorkflowTemplate:
    """One template: which shipped file, installed under which name, installing what, with which
    job timeout."""

    template: str
    file: str
    installs: Installs
    timeout_minutes: int = 70

    @property
    def path(self) -> str:
        return f"{WORKFLOWS_DIR}/{self.file}"

    def content(self) -> bytes:
        text = self.installs.render(template_text(self.template))
        return text.replace(TEMPLATE_TIMEOUT, f"timeout-minutes: {self.timeout_minutes}").encode("utf-8")


def template_text(name: str) -> str:
    """A shipped template's text: ``ai-implement.yml``, ``ai-implement-planning.yml`` or
    ``ai-implement-gap-fill.yml``."""
    return resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")


def _write(
    repo: Repo, path: str, content: bytes, message: str, *, branch: str, sha: str | None = None
) -> None:
    """Write a file; a write GitHub carried out though its answer was lost is done.

    The client sends a PUT again after a gateway's error or no answer, as it sends any PUT: the
    contents API's is not idempotent, and the second try of a write the first made is refused
    (422 ``"sha" wasn't supplied``, or a 409 for the ``sha`` no longer the file's). The file is read
    again then: holding what was written, the sync succeeded."""
    try:
        repo.put_file(path, content, message, sha=sha, branch=branch)
    except ProviderError as exc:
        if exc.status not in (409, 422):
            raise
        written = repo.get_file(path, ref=branch)
        if written is None or written.content != content:
            raise


def sync(repo: Repo, mapping: MappingView, templates: list[WorkflowTemplate]) -> SyncResult:
    """Create or update each template in the repository; report what changed.

    :raises ProviderError: with GitHub's message when reading or writing a file fails.
    """
    created: list[str] = []
    updated: list[str] = []
    unchanged: list[str] = []
    branch = mapping.default_branch
    pinned = {t.installs.pinned.sha256: t.installs.pinned for t in templates if t.installs.pinned}
    for package in pinned.values():
        # kept before a workflow names it: a deploy may come between the write and the first run
        session_package.pin(package)
    for tpl in templates:
        wanted = tpl.content()
        try:
            current = repo.get_file(tpl.path, ref=branch)
            if current is None:
                _write(repo, tpl.path, wanted, f"AI-Implement: add {tpl.path}", branch=branch)
                created.append(tpl.path)
            elif current.content == wanted:
                unchanged.append(tpl.path)
            else:
                _write(repo, tpl.path, wanted, f"AI-Implement: update {tpl.path}", branch=branch,
                       sha=current.sha)
                updated.append(tpl.path)
        except ProviderError as exc:
            # the API shows this message as the 500 row's "(underlying error message)"
            message = github_message(exc)
            if exc.status == 404 and isinstance(exc.detail, dict):  # GitHub's own "Not Found" names nothing
                # (a workflow file wants a permission of its own, whose lack GitHub answers 404)
                message += (f": GitHub answered 404 writing {tpl.path} to {branch} of {repo.full_name} (no "
                            "such repository or branch, or these credentials cannot see it or write to it: "
                            "a workflow file needs a personal token's `workflow` scope, or an App's "
                            "Workflows: write permission)")
            raise ProviderError(message, provider="github-actions", status=exc.status,
                                detail=exc.detail) from None
    return SyncResult(created=tuple(created), updated=tuple(updated), unchanged=tuple(unchanged))
