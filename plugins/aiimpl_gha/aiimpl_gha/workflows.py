"""The workflow templates this plugin ships, and installing them in a repository.

``sync-workflows`` writes each template to ``.github/workflows/<file>`` on the mapping's default
branch through the contents API: created when missing, updated (with the current blob sha) when
different, left alone when the decoded content is already the same, so running it twice commits once.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from aiimpl_core.errors import ProviderError
from aiimpl_core.github import Repo, github_message
from aiimpl_core.types import MappingView, SyncResult

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


def timeout_minutes(lifetime_seconds: int) -> int:
    """The workflow job's ``timeout-minutes`` for a session lifetime: the lifetime, rounded up to a
    minute, and 10 minutes more (70 for the default hour). GitHub ends the job there as
    ``cancelled``, which the backend reads as the session's timeout once its lifetime has passed."""
    return -(-int(lifetime_seconds) // 60) + 10


@dataclass(frozen=True)
class WorkflowTemplate:
    """One template: which shipped file, installed under which name, with which job timeout."""

    template: str
    file: str
    timeout_minutes: int = 70

    @property
    def path(self) -> str:
        return f"{WORKFLOWS_DIR}/{self.file}"

    def content(self) -> bytes:
        text = template_text(self.template)
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
