"""The workflow templates this plugin ships, and installing them in a repository.

``sync-workflows`` writes each template to ``.github/workflows/<file>`` on the mapping's default
branch through the contents API: created when missing, updated (with the current blob sha) when
different, left alone when the decoded content is already the same, so running it twice commits once.

What a workflow installs before the session is written into it too: the session program (by default
``aiimpl-core`` of this orchestrator's own version, so a deploy and a sync change what the sessions
run, and every run of a job runs the same program) and the agent CLI. The settings that choose
otherwise are checked here: each word becomes one shell word in single quotes, and no value can
leave its line of the workflow, its shell word, or reach GitHub's ``${{ }}`` expressions.
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit

from aiimpl_core.errors import ProviderConfigError, ProviderError
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
URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^ ]*")


@dataclass(frozen=True)
class Installs:
    """What a workflow installs before the session: pip's arguments for the session program and
    npm's for the agent (none: no agent is installed)."""

    session: tuple[str, ...]
    agent: tuple[str, ...] = ()

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


def core_version() -> str | None:
    """This orchestrator's version of the session program's distribution (``None``: not installed,
    e.g. run from a source tree)."""
    try:
        return importlib.metadata.version(config.SESSION_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def core_requirement() -> str:
    """The session program of this orchestrator's own version: ``aiimpl-core==<version>``.

    :raises ProviderConfigError: when that version cannot be installed from a package index (a
        local version such as ``0.1.dev3+g1234abc``, or no installed distribution to read it from):
        falling back to another version would run sessions of a program this orchestrator is not.
    """
    name = config.SESSION_DISTRIBUTION
    version = core_version()
    if version is None or "+" in version:
        what = (f"this orchestrator's {name} is {version}, a local version no package index serves"
                if version else f"the version of this orchestrator's {name} is not known (not installed)")
        raise ProviderConfigError(
            f"{what}: set {config.SESSION_PACKAGE} to what the workflows install as the session program "
            "(a wheel URL, git+https://…@<commit>, or a requirement on your own index)",
            provider="github-actions",
        )
    return f"{name}=={version}"


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


def sync(repo: Repo, mapping: MappingView, templates: list[WorkflowTemplate]) -> SyncResult:
    """Create or update each template in the repository; report what changed.

    :raises ProviderError: with GitHub's message when reading or writing a file fails.
    """
    created: list[str] = []
    updated: list[str] = []
    unchanged: list[str] = []
    branch = mapping.default_branch
    for tpl in templates:
        wanted = tpl.content()
        try:
            current = repo.get_file(tpl.path, ref=branch)
            if current is None:
                repo.put_file(tpl.path, wanted, f"AI-Implement: add {tpl.path}", branch=branch)
                created.append(tpl.path)
            elif current.content == wanted:
                unchanged.append(tpl.path)
            else:
                repo.put_file(
                    tpl.path, wanted, f"AI-Implement: update {tpl.path}", sha=current.sha, branch=branch
                )
                updated.append(tpl.path)
        except ProviderError as exc:
            # the API shows this message as the 500 row's "(underlying error message)"
            raise ProviderError(
                github_message(exc), provider="github-actions", status=exc.status, detail=exc.detail
            ) from None
    return SyncResult(created=tuple(created), updated=tuple(updated), unchanged=tuple(unchanged))
