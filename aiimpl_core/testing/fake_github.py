"""A fake GitHub REST API for tests, validated against GitHub's own OpenAPI description.

It serves the operations the project uses (see ``shared/specs/README.md``): App installation
lookup and installation access tokens, workflow dispatch and workflow runs, repository contents,
pull requests and issue comments, and three operations the fast subset lacks: reading a workflow
(its ``state``), cancelling a run and listing pull requests (a test that calls them passes
``spec_path`` of the complete description).
State lives in memory on the :class:`FakeGitHub` object; answers are built from the description's
own examples. Every exchange goes through
:class:`~aiimpl_core.testing.fakeserver.OpenAPIFakeServer`, so ``assert_clean()`` fails a test whose
client (or this fake) strays from the description::

    with FakeGitHub() as gh:
        gh.add_repo("acme", "api")
        gh.add_installation("acme")
        config = {"AIIMPL_GITHUB_API_URL": gh.url, "AIIMPL_GITHUB_APP_ID": str(gh.app_id),
                  "AIIMPL_GITHUB_PRIVATE_KEY": gh.private_key_pem}
        ...
        gh.assert_clean()

Authentication is checked as GitHub does: ``/app/*`` and the installation lookup need an App JWT
(RS256, verified with the App's public key, ``exp`` at most ten minutes ahead); repository
endpoints need an installation token that covers the repository and carries the permission the
operation needs (or the personal token :attr:`FakeGitHub.personal_token`).

A few real GitHub answers are absent from the description (for example the 422 of a dispatch to
a workflow without a ``workflow_dispatch`` trigger or to a disabled one, the 404 of an unknown
workflow, or 401 on repository endpoints). The fake still sends them, with GitHub's
``basic-error`` body checked against the description's schema, and lists them in
:attr:`FakeGitHub.undocumented`. A workflow's ``state`` is set with
:meth:`FakeGitHub.set_workflow_state`.

A dispatch that asks for ``return_run_details`` is answered ``200`` with the run's id and URLs, as
github.com does; :attr:`FakeGitHub.run_details` plays a server without the parameter (GitHub
Enterprise Server before it): ``"ignored"`` answers ``204`` all the same, ``"refused"`` refuses the
key with the ``422`` such a server sends.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import flask
import jwt
import yaml

from .fakeserver import UNDOCUMENTED_HEADER, OpenAPIFakeServer, load_spec

DOCS = "https://docs.github.com/rest"
PERMISSION_LEVELS = {"read": 1, "write": 2, "admin": 3}
#: the characters of a token after its prefix (``ghs_`` and 36 of these)
TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
#: the states of a workflow the fake models (the description also lists ``deleted``, a workflow
#: whose file is gone, which the fake does not keep); only ``active`` can be dispatched
WORKFLOW_STATES = frozenset({"active", "disabled_fork", "disabled_inactivity", "disabled_manually"})
#: how a dispatch's ``return_run_details`` is taken: ``returned`` (github.com: 200 with the run),
#: ``ignored`` (204 all the same) or ``refused`` (422: a server that does not know the key)
RUN_DETAILS_MODES = frozenset({"returned", "ignored", "refused"})
DEFAULT_APP_PERMISSIONS = {
    "actions": "write",
    "contents": "write",
    "issues": "write",
    "metadata": "read",
    "pull_requests": "write",
    "workflows": "write",
}


#: properties of a full pull request (``pulls/get``, ``pulls/create``) that GitHub's
#: ``pull-request-simple`` (the items of ``pulls/list``) does not have
PULL_DETAIL_ONLY = frozenset(
    "merged mergeable rebaseable mergeable_state merged_by comments review_comments"
    " maintainer_can_modify commits additions deletions changed_files".split()
)

#: answers the description documents with a schema no body can satisfy: the 409 of a contents
#: update is ``oneOf`` basic-error / repository-rule-violation-error, two schemas without required
#: properties, so every error body matches both. These are checked against basic-error alone.
AMBIGUOUS_ANSWERS = frozenset({("PUT", "/repos/{owner}/{repo}/contents/{path}", 409)})


def github_subset_spec() -> str:
    """Path of GitHub's REST description (the fast subset) in ``shared/specs``."""
    from .pytest_plugin import specs_dir

    return os.path.join(specs_dir(), "github", "rest", "api.github.com.subset.json")


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def blob_sha(content: bytes) -> str:
    """Git's blob id of a file's bytes (what GitHub reports as ``sha``)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()  # noqa: S324 - git's id


def generate_private_key() -> tuple[str, str]:
    """A fresh 2048-bit RSA key pair as (private PEM, public PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


_KEY_CACHE: list[tuple[str, str]] = []
_APP_IDS = itertools.count(4242)


def _test_key() -> tuple[str, str]:
    # one key per test session: RSA generation costs ~100 ms and the key is only test data
    if not _KEY_CACHE:
        _KEY_CACHE.append(generate_private_key())
    return _KEY_CACHE[0]


@dataclass
class Installation:
    id: int
    owner: str
    repositories: set[str] | None  # None: all repositories of the owner
    permissions: dict[str, str]

    def covers(self, owner: str, repo: str) -> bool:
        return owner.lower() == self.owner.lower() and (
            self.repositories is None or repo in self.repositories
        )


@dataclass
class InstallationToken:
    token: str
    installation_id: int
    owner: str
    repositories: set[str] | None
    permissions: dict[str, str]
    expires_at: datetime


@dataclass
class FileEntry:
    content: bytes

    @property
    def sha(self) -> str:
        return blob_sha(self.content)


@dataclass
class Commit:
    sha: str
    branch: str
    path: str
    message: str
    created: bool


@dataclass
class Workflow:
    id: int
    path: str  # .github/workflows/<file>
    name: str
    dispatchable: bool = True
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_name: str | None = None
    state: str = "active"  # ``disabled_manually``, ``disabled_inactivity``, ``disabled_fork``, …
    created_at: datetime = field(default_factory=_now)

    @property
    def file(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class Run:
    id: int
    owner: str
    repo: str
    workflow: Workflow
    title: str  # ``display_title``: the rendered ``run-name`` (``name`` is the workflow's name)
    head_branch: str
    inputs: dict[str, Any]
    event: str = "workflow_dispatch"
    status: str = "queued"
    conclusion: str | None = None
    run_number: int = 1
    created_at: datetime = field(default_factory=_now)
    updated_at: datetime = field(default_factory=_now)
    run_started_at: datetime | None = None


@dataclass
class PullRequest:
    number: int
    owner: str
    repo: str
    title: str
    head: str
    base: str
    body: str | None
    draft: bool = False
    state: str = "open"
    created_at: datetime = field(default_factory=_now)
    merged_at: datetime | None = None  # set (with ``state`` "closed") by a test that merges it
    head_sha: str | None = None  # the head commit, when a test needs it to be a real one


@dataclass
class IssueComment:
    id: int
    number: int
    body: str
    created_at: datetime = field(default_factory=_now)


@dataclass
class Repository:
    owner: str
    name: str
    default_branch: str = "main"
    branches: set[str] = field(default_factory=set)
    files: dict[str, dict[str, FileEntry]] = field(default_factory=dict)  # branch -> path -> file
    commits: list[Commit] = field(default_factory=list)
    workflows: dict[str, Workflow] = field(default_factory=dict)  # registered without a file
    workflow_states: dict[str, str] = field(default_factory=dict)  # file -> state, when not active
    id: int = 0

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


class GitHubError(Exception):
    """An error answer of the fake: status, GitHub's message, optional ``errors`` list."""

    def __init__(
        self,
        status: int,
        message: str,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.headers = headers or {}


def _parse_workflow_yaml(text: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _triggers(doc: dict[str, Any]) -> Any:
    # YAML 1.1 reads the bare key ``on`` as the boolean true
    return doc.get("on", doc.get(True))


_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def render_run_name(template: str, inputs: dict[str, Any]) -> str:
    """Evaluate the ``inputs.X`` / ``github.event.inputs.X`` expressions of a ``run-name``."""

    def value(match: re.Match[str]) -> str:
        expr = match.group(1)
        for prefix in ("inputs.", "github.event.inputs."):
            if expr.startswith(prefix):
                return str(inputs.get(expr[len(prefix) :], ""))
        return ""

    return _EXPR.sub(value, template)


class FakeGitHub:
    """In-memory GitHub behind an OpenAPI-validated local server.

    :param app_id: the GitHub App's id (JWT ``iss``); a fresh one per fake when omitted.
    :param private_key_pem: the App's key; a test key is generated when omitted.
    :param token_ttl: lifetime of installation tokens (GitHub: one hour).
    :param spec_path: the description to validate against (default: the subset in ``shared/specs``).
    :param run_details: how a dispatch's ``return_run_details`` is taken (:data:`RUN_DETAILS_MODES`;
        :attr:`run_details` may be changed later).
    """

    def __init__(
        self,
        *,
        app_id: int | None = None,
        private_key_pem: str | None = None,
        token_ttl: timedelta = timedelta(hours=1),
        spec_path: str | None = None,
        run_details: str = "returned",
    ) -> None:
        if run_details not in RUN_DETAILS_MODES:
            raise ValueError(f"run_details must be one of {sorted(RUN_DETAILS_MODES)}, not {run_details!r}")
        self.run_details = run_details
        if private_key_pem is None:
            self.private_key_pem, self.public_key_pem = _test_key()
        else:
            from cryptography.hazmat.primitives import serialization

            key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
            self.private_key_pem = private_key_pem
            self.public_key_pem = (
                key.public_key()
                .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
                .decode()
            )
        # a fresh App id per fake: the client's token cache is keyed by API URL and App id, and a
        # later fake may get an earlier one's port
        self.app_id = next(_APP_IDS) if app_id is None else app_id
        self.token_ttl = token_ttl
        self.personal_token = "ghp_" + secrets.token_hex(18)
        self.spec_path = spec_path or github_subset_spec()
        self.examples = self._examples()
        self.repos: dict[tuple[str, str], Repository] = {}
        self.installations: dict[int, Installation] = {}
        self.tokens: dict[str, InstallationToken] = {}
        self.issued_tokens: list[InstallationToken] = []
        self.runs: dict[int, Run] = {}
        self.pulls: dict[tuple[str, str], list[PullRequest]] = {}
        self.comments: dict[tuple[str, str, int], list[IssueComment]] = {}
        self.undocumented: list[str] = []
        self.failures: list[tuple[str, str, GitHubError, int]] = []  # method, path regex, error, times
        self.garbles: list[tuple[str, str, int]] = []  # method, path regex, times
        self.late_failures: list[tuple[str, str, GitHubError, int]] = []  # answered after the work
        self.delays: list[tuple[str, str, float, int]] = []  # method, path regex, seconds, times
        self.lock = threading.RLock()
        self._ids = itertools.count(1000)
        self.server = OpenAPIFakeServer(self._make_app(), self.spec_path)

    # -- lifecycle --

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> FakeGitHub:
        from ..github.app_auth import TOKENS
        from ..github.client import _REFUSED_RUN_DETAILS

        # tokens minted against an earlier fake mean nothing to this one, nor does an earlier fake's
        # refusal of run details (it may have had this one's address)
        TOKENS.clear()
        _REFUSED_RUN_DETAILS.clear()
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def requests(self) -> list[Any]:
        return self.server.requests

    @property
    def violations(self) -> list[str]:
        return self.server.violations

    def assert_clean(self) -> None:
        """Fail when any request or answer broke GitHub's description."""
        self.server.assert_clean()

    # -- setup helpers for tests --

    def add_repo(
        self, owner: str, repo: str, *, default_branch: str = "main", branches: tuple[str, ...] = ()
    ) -> Repository:
        with self.lock:
            r = Repository(owner, repo, default_branch, {default_branch, *branches}, id=next(self._ids))
            for b in r.branches:
                r.files[b] = {}
            self.repos[(owner.lower(), repo.lower())] = r
            return r

    def add_branch(self, owner: str, repo: str, branch: str) -> None:
        r = self.repo(owner, repo)
        with self.lock:
            r.branches.add(branch)
            r.files.setdefault(branch, dict(r.files[r.default_branch]))

    def add_installation(
        self, owner: str, repositories: list[str] | None = None, permissions: dict[str, str] | None = None
    ) -> int:
        """Install the App on ``owner`` (all its repositories, or only ``repositories``)."""
        with self.lock:
            inst = Installation(
                next(self._ids),
                owner,
                set(repositories) if repositories is not None else None,
                dict(permissions or DEFAULT_APP_PERMISSIONS),
            )
            self.installations[inst.id] = inst
            return inst.id

    def add_workflow(
        self,
        owner: str,
        repo: str,
        file: str,
        *,
        dispatchable: bool = True,
        inputs: dict[str, dict[str, Any]] | None = None,
        run_name: str | None = None,
        name: str | None = None,
        state: str = "active",
    ) -> Workflow:
        """Register a workflow without writing its file (a file in the repository wins)."""
        r = self.repo(owner, repo)
        with self.lock:
            wf = Workflow(
                next(self._ids),
                f".github/workflows/{file}",
                name or file,
                dispatchable,
                dict(inputs or {}),
                run_name,
            )
            r.workflows[file] = wf
        self.set_workflow_state(owner, repo, file, state)
        return wf

    def set_workflow_state(self, owner: str, repo: str, file: str, state: str) -> None:
        """Set a workflow's ``state`` (by file name), as the Actions tab or ``gh workflow disable``
        does: ``disabled_manually``, ``disabled_inactivity``, ``disabled_fork`` or ``active``."""
        if state not in WORKFLOW_STATES:
            raise ValueError(f"unknown workflow state {state!r}")
        r = self.repo(owner, repo)
        with self.lock:
            if state == "active":
                r.workflow_states.pop(file, None)
            else:
                r.workflow_states[file] = state
            if file in r.workflows:
                r.workflows[file].state = state

    def put_file(
        self, owner: str, repo: str, path: str, content: str | bytes, branch: str | None = None
    ) -> str:
        """Write a file directly (no API call); returns its blob sha."""
        r = self.repo(owner, repo)
        data = content.encode() if isinstance(content, str) else content
        with self.lock:
            r.files.setdefault(branch or r.default_branch, {})[path] = FileEntry(data)
        return blob_sha(data)

    def file(self, owner: str, repo: str, path: str, branch: str | None = None) -> str | None:
        """A file's text, or ``None`` when absent."""
        r = self.repo(owner, repo)
        entry = r.files.get(branch or r.default_branch, {}).get(path)
        return entry.content.decode() if entry else None

    def commits(self, owner: str, repo: str) -> list[Commit]:
        return list(self.repo(owner, repo).commits)

    def pull_requests(self, owner: str, repo: str) -> list[PullRequest]:
        return list(self.pulls.get((owner.lower(), repo.lower()), []))

    def issue_comments(self, owner: str, repo: str, number: int) -> list[str]:
        return [c.body for c in self.comments.get((owner.lower(), repo.lower(), number), [])]

    def runs_of(self, owner: str, repo: str) -> list[Run]:
        return [
            r
            for r in self.runs.values()
            if (r.owner.lower(), r.repo.lower()) == (owner.lower(), repo.lower())
        ]

    def run_named(self, fragment: str) -> Run:
        found = [r for r in self.runs.values() if fragment in r.title]
        if len(found) != 1:
            raise LookupError(f"{len(found)} runs named like {fragment!r}")
        return found[0]

    def advance_run(self, run_id: int, status: str, conclusion: str | None = None) -> Run:
        """Move a run: ``queued``/``in_progress``/``completed`` (with a conclusion such as
        ``success``, ``failure``, ``cancelled``, ``timed_out``)."""
        with self.lock:
            run = self.runs[run_id]
            run.status = status
            run.conclusion = conclusion if status == "completed" else None
            run.updated_at = _now()
            if status != "queued" and run.run_started_at is None:
                run.run_started_at = run.updated_at
            return run

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        status: int,
        message: str,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        done: bool = False,
    ) -> None:
        """Answer the next ``times`` matching requests with an error (rate limits, outages).

        :param path_pattern: a regular expression searched in the request path.
        :param done: do the request first and answer the error instead of its answer, as a gateway
            in front of GitHub does when it gives up waiting (``502``/``504``): the work is done.
        """
        with self.lock:
            entry = (method.upper(), path_pattern, GitHubError(status, message, headers=headers), times)
            (self.late_failures if done else self.failures).append(entry)

    def delay_next(self, method: str, path_pattern: str, seconds: float, *, times: int = 1) -> None:
        """Do the next ``times`` matching requests, then wait ``seconds`` before answering them (a
        slow GitHub: a client whose read timeout is shorter gets no answer, though the work is done).

        :param path_pattern: a regular expression searched in the request path.
        """
        with self.lock:
            self.delays.append((method.upper(), path_pattern, seconds, times))

    def garble_next(self, method: str, path_pattern: str, *, times: int = 1) -> None:
        """Do the next ``times`` matching requests, then answer them with an HTML page instead of
        the JSON (same status), as a proxy or gateway in front of GitHub may: the answer is off
        the description on purpose, and recorded as undocumented.

        :param path_pattern: a regular expression searched in the request path.
        """
        with self.lock:
            self.garbles.append((method.upper(), path_pattern, times))

    def _take(self, entries: list[Any]) -> Any:
        """The first of ``entries`` (method, path regex, …, times) that matches the current request,
        used once; ``None`` when none matches."""
        with self.lock:
            for i, entry in enumerate(entries):
                method, pattern, *rest, times = entry
                if method == flask.request.method and re.search(pattern, flask.request.path):
                    if times <= 1:
                        entries.pop(i)
                    else:
                        entries[i] = (method, pattern, *rest, times - 1)
                    return entry
        return None

    def repo(self, owner: str, repo: str) -> Repository:
        try:
            return self.repos[(owner.lower(), repo.lower())]
        except KeyError:
            raise LookupError(f"no fake repository {owner}/{repo}") from None

    def app_jwt(self, *, iat_offset: int = -60, lifetime: int = 600, iss: Any = None) -> str:
        """An App JWT signed with the App's key (for tests that call the fake directly)."""
        now = int(_now().timestamp())
        payload = {
            "iat": now + iat_offset,
            "exp": now + iat_offset + lifetime,
            "iss": str(self.app_id) if iss is None else iss,
        }
        return jwt.encode(payload, self.private_key_pem, algorithm="RS256")

    # -- answers built from the description's examples --

    def _examples(self) -> dict[str, Any]:
        spec = load_spec(self.spec_path).document
        return {k: v["value"] for k, v in spec["components"]["examples"].items()}

    def _example(self, name: str) -> Any:
        return copy.deepcopy(self.examples[name])

    def _repo_json(self, r: Repository) -> dict[str, Any]:
        out = self._example("workflow-run")["repository"]
        html = f"https://github.com/{r.full_name}"
        api = f"{self.url}/repos/{r.full_name}"
        out.update(id=r.id, name=r.name, full_name=r.full_name, html_url=html, url=api)
        out["owner"]["login"] = r.owner
        return out

    def _run_json(self, run: Run) -> dict[str, Any]:
        out = self._example("workflow-run")
        r = self.repo(run.owner, run.repo)
        html = f"https://github.com/{r.full_name}/actions/runs/{run.id}"
        api = f"{self.url}/repos/{r.full_name}/actions/runs/{run.id}"
        out.update(
            id=run.id,
            name=run.workflow.name,
            display_title=run.title,
            head_branch=run.head_branch,
            path=run.workflow.path,
            run_number=run.run_number,
            event=run.event,
            status=run.status,
            conclusion=run.conclusion,
            workflow_id=run.workflow.id,
            url=api,
            html_url=html,
            created_at=_iso(run.created_at),
            updated_at=_iso(run.updated_at),
            run_started_at=_iso(run.run_started_at or run.created_at),
            pull_requests=[],
            jobs_url=f"{api}/jobs",
            logs_url=f"{api}/logs",
            artifacts_url=f"{api}/artifacts",
            cancel_url=f"{api}/cancel",
            rerun_url=f"{api}/rerun",
            previous_attempt_url=None,
            workflow_url=f"{self.url}/repos/{r.full_name}/actions/workflows/{run.workflow.id}",
        )
        out["repository"] = self._repo_json(r)
        out["head_repository"] = self._repo_json(r)
        return out

    def _workflow_json(self, r: Repository, wf: Workflow) -> dict[str, Any]:
        # built field by field: the fast subset has no ``workflow`` example to start from
        return {
            "id": wf.id,
            "node_id": base64.b64encode(f"08:Workflow{wf.id}".encode()).decode(),
            "name": wf.name,
            "path": wf.path,
            "state": wf.state,
            "created_at": _iso(wf.created_at),
            "updated_at": _iso(wf.created_at),
            "url": f"{self.url}/repos/{r.full_name}/actions/workflows/{wf.id}",
            "html_url": f"https://github.com/{r.full_name}/blob/{r.default_branch}/{wf.path}",
            "badge_url": f"https://github.com/{r.full_name}/workflows/{quote(wf.name)}/badge.svg",
        }

    def _content_json(self, r: Repository, path: str, entry: FileEntry, branch: str) -> dict[str, Any]:
        encoded = base64.b64encode(entry.content).decode()
        # GitHub wraps the base64 text at 60 characters
        wrapped = "\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60)) + "\n"
        api = f"{self.url}/repos/{r.full_name}/contents/{path}"
        git = f"{self.url}/repos/{r.full_name}/git/blobs/{entry.sha}"
        html = f"https://github.com/{r.full_name}/blob/{branch}/{path}"
        return {
            "type": "file",
            "encoding": "base64",
            "size": len(entry.content),
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "content": wrapped,
            "sha": entry.sha,
            "url": api,
            "git_url": git,
            "html_url": html,
            "download_url": f"https://raw.githubusercontent.com/{r.full_name}/{branch}/{path}",
            "_links": {"git": git, "self": api, "html": html},
        }

    def _pull_json(self, pr: PullRequest) -> dict[str, Any]:
        out = self._example("pull-request")
        r = self.repo(pr.owner, pr.repo)
        html = f"https://github.com/{r.full_name}/pull/{pr.number}"
        api = f"{self.url}/repos/{r.full_name}/pulls/{pr.number}"
        out.update(
            id=pr.number + 100000,
            number=pr.number,
            title=pr.title,
            body=pr.body,
            state=pr.state,
            draft=pr.draft,
            html_url=html,
            url=api,
            diff_url=f"{html}.diff",
            patch_url=f"{html}.patch",
            issue_url=f"{self.url}/repos/{r.full_name}/issues/{pr.number}",
            created_at=_iso(pr.created_at),
            updated_at=_iso(pr.created_at),
            closed_at=_iso(pr.merged_at) if pr.merged_at else None,
            merged_at=_iso(pr.merged_at) if pr.merged_at else None,
            merge_commit_sha=None,
            merged=pr.merged_at is not None,
            mergeable=None,
            merged_by=None,
            locked=False,
            active_lock_reason=None,
            labels=[],
            milestone=None,
            assignee=None,
            assignees=[],
            requested_reviewers=[],
            requested_teams=[],
            review_comments=0,
            commits=1,
            comments=len(self.comments.get((r.owner.lower(), r.name.lower(), pr.number), [])),
        )
        if pr.head_sha:
            out["head"]["sha"] = pr.head_sha
        for side, ref in (("head", pr.head), ("base", pr.base)):
            out[side]["ref"] = ref
            out[side]["label"] = f"{r.owner}:{ref}"
            out[side]["repo"] = self._repo_json(r) | {
                k: v for k, v in out[side]["repo"].items() if k not in self._repo_json(r)
            }
        return out

    def _pull_simple_json(self, pr: PullRequest) -> dict[str, Any]:
        """A pull request as ``GET /repos/{owner}/{repo}/pulls`` lists it (``pull-request-simple``)."""
        return {k: v for k, v in self._pull_json(pr).items() if k not in PULL_DETAIL_ONLY}

    def _comment_json(self, r: Repository, c: IssueComment) -> dict[str, Any]:
        out = self._example("issue-comment")
        out.update(
            id=c.id,
            body=c.body,
            created_at=_iso(c.created_at),
            updated_at=_iso(c.created_at),
            html_url=f"https://github.com/{r.full_name}/issues/{c.number}#issuecomment-{c.id}",
            url=f"{self.url}/repos/{r.full_name}/issues/comments/{c.id}",
            issue_url=f"{self.url}/repos/{r.full_name}/issues/{c.number}",
        )
        return out

    # -- authentication --

    def _verify_app_jwt(self, auth: str | None) -> None:
        if not auth or not auth.lower().startswith("bearer "):
            raise GitHubError(401, "A JSON web token could not be decoded")
        token = auth.split(" ", 1)[1].strip()
        try:
            claims = jwt.decode(
                token,
                self.public_key_pem,
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"]},
                leeway=0,
            )
        except jwt.ExpiredSignatureError:
            raise GitHubError(
                401,
                "'Expiration time' claim ('exp') must be a numeric value representing "
                "the future time at which the assertion expires",
            ) from None
        except jwt.PyJWTError:
            raise GitHubError(401, "A JSON web token could not be decoded") from None
        now = int(_now().timestamp())
        if int(claims["exp"]) > now + 600 + 5:  # GitHub: at most ten minutes ahead
            raise GitHubError(401, "'Expiration time' claim ('exp') is too far in the future")
        if int(claims["iat"]) > now + 5:
            raise GitHubError(
                401,
                "'Issued at' claim ('iat') must be an Integer representing the time "
                "that the assertion was issued",
            )
        if str(claims["iss"]) != str(self.app_id):
            raise GitHubError(401, "'Issuer' claim ('iss') must be an Integer")

    def _check_token(self, auth: str | None, r: Repository, permission: str, level: str) -> None:
        if not auth or " " not in auth:
            raise GitHubError(401, "Requires authentication")
        scheme, token = auth.split(" ", 1)
        if scheme.lower() not in ("bearer", "token"):
            raise GitHubError(401, "Bad credentials")
        token = token.strip()
        if token == self.personal_token:
            return
        record = self.tokens.get(token)
        if record is None or record.expires_at <= _now():
            raise GitHubError(401, "Bad credentials")
        if record.owner.lower() != r.owner.lower() or (
            record.repositories is not None and r.name not in record.repositories
        ):
            raise GitHubError(404, "Not Found")  # GitHub hides repositories a token cannot see
        have = PERMISSION_LEVELS.get(record.permissions.get(permission, ""), 0)
        if have < PERMISSION_LEVELS[level]:
            raise GitHubError(403, "Resource not accessible by integration")

    # -- the Flask app --

    def _make_app(self) -> flask.Flask:  # noqa: C901 - one route per operation, kept together
        app = flask.Flask("fake_github")
        gh = self

        def repo_or_404(owner: str, repo: str) -> Repository:
            try:
                return gh.repo(owner, repo)
            except LookupError:
                raise GitHubError(404, "Not Found") from None

        def body() -> dict[str, Any]:
            data = flask.request.get_json(silent=True)
            if not isinstance(data, dict):
                raise GitHubError(400, "Problems parsing JSON")
            return data

        def json_response(payload: Any, status: int = 200) -> flask.Response:
            resp = flask.Response(json.dumps(payload), status=status, mimetype="application/json")
            return resp

        @app.before_request
        def injected_failure() -> flask.Response | None:
            with gh.lock:
                for i, (method, pattern, error, times) in enumerate(gh.failures):
                    if method == flask.request.method and re.search(pattern, flask.request.path):
                        if times <= 1:
                            gh.failures.pop(i)
                        else:
                            gh.failures[i] = (method, pattern, error, times - 1)
                        raise error
            return None

        @app.errorhandler(GitHubError)
        def github_error(err: GitHubError) -> flask.Response:
            payload: dict[str, Any] = {
                "message": err.message,
                "documentation_url": DOCS,
                "status": str(err.status),
            }
            if err.errors is not None:
                payload["errors"] = err.errors
            resp = json_response(payload, err.status)
            for k, v in err.headers.items():
                resp.headers[k] = v
            if not gh._documented(flask.request.url_rule, flask.request.method, err.status):
                gh._note_undocumented(err.status, payload)
                resp.headers[UNDOCUMENTED_HEADER] = "1"
            return resp

        @app.after_request
        def garbled(resp: flask.Response) -> flask.Response:
            with gh.lock:
                for i, (method, pattern, times) in enumerate(gh.garbles):
                    if method == flask.request.method and re.search(pattern, flask.request.path):
                        if times <= 1:
                            gh.garbles.pop(i)
                        else:
                            gh.garbles[i] = (method, pattern, times - 1)
                        page = flask.Response(
                            "<html><head><title>Upstream answer</title></head><body></body></html>",
                            status=resp.status_code, mimetype="text/html",
                        )
                        page.headers[UNDOCUMENTED_HEADER] = "1"
                        gh.undocumented.append(
                            f"{flask.request.method} {flask.request.path} -> {resp.status_code}: an HTML page"
                        )
                        return page
            return resp

        @app.after_request
        def rate_limit_headers(resp: flask.Response) -> flask.Response:
            resp.headers.setdefault("x-ratelimit-limit", "5000")
            resp.headers.setdefault("x-ratelimit-remaining", "4999")
            resp.headers.setdefault("x-ratelimit-reset", str(int(_now().timestamp()) + 3600))
            resp.headers.setdefault("x-github-api-version-selected", "2022-11-28")
            return resp

        # (after_request functions run last registered first: the late failure before the headers)
        @app.after_request
        def late_failure(resp: flask.Response) -> flask.Response:
            entry = gh._take(gh.late_failures)
            return github_error(entry[2]) if entry is not None else resp

        @app.after_request
        def delayed(resp: flask.Response) -> flask.Response:
            entry = gh._take(gh.delays)
            if entry is not None:
                time.sleep(entry[2])
            return resp

        # installation lookup and tokens (App JWT)

        @app.get("/repos/<owner>/<repo>/installation")
        def get_installation(owner: str, repo: str) -> flask.Response:
            gh._verify_app_jwt(flask.request.headers.get("Authorization"))
            for inst in gh.installations.values():
                if inst.covers(owner, repo) and (owner.lower(), repo.lower()) in gh.repos:
                    return json_response(gh._installation_json(inst))
            raise GitHubError(404, "Not Found")

        @app.post("/app/installations/<int:installation_id>/access_tokens")
        def create_token(installation_id: int) -> flask.Response:
            gh._verify_app_jwt(flask.request.headers.get("Authorization"))
            inst = gh.installations.get(installation_id)
            if inst is None:
                raise GitHubError(404, "Not Found")
            data = flask.request.get_json(silent=True) if flask.request.get_data() else {}
            if not isinstance(data, dict):
                raise GitHubError(400, "Problems parsing JSON")
            repos: set[str] | None = inst.repositories
            if data.get("repositories") is not None:
                wanted = set(data["repositories"])
                accessible = {r.name for r in gh.repos.values() if inst.covers(r.owner, r.name)}
                if wanted - accessible:
                    raise GitHubError(
                        422,
                        "There is at least one repository that does not exist or is not "
                        "accessible to the parent installation.",
                    )
                repos = wanted
            perms = dict(inst.permissions)
            if data.get("permissions") is not None:
                for name, level in data["permissions"].items():
                    if PERMISSION_LEVELS.get(inst.permissions.get(name, ""), 0) < PERMISSION_LEVELS.get(
                        level, 9
                    ):
                        raise GitHubError(
                            422, "The permissions requested are not granted to this installation."
                        )
                perms = dict(data["permissions"])
            record = InstallationToken(
                "ghs_" + "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(36)),  # as GitHub's
                inst.id,
                inst.owner,
                repos,
                perms,
                _now() + gh.token_ttl,
            )
            with gh.lock:
                gh.tokens[record.token] = record
                gh.issued_tokens.append(record)
            out = gh._example("installation-token")
            out.update(
                token=record.token,
                expires_at=_iso(record.expires_at),
                permissions=perms,
                repository_selection="selected" if repos is not None else "all",
            )
            template = out["repositories"][0]
            out["repositories"] = [
                gh._repo_json(gh.repos[(inst.owner.lower(), name.lower())])
                | {
                    k: v
                    for k, v in template.items()
                    if k not in ("id", "name", "full_name", "owner", "url", "html_url")
                }
                for name in sorted(repos or [])
            ]
            if repos is None:
                del out["repositories"]
            return json_response(out, 201)

        # workflows

        @app.post("/repos/<owner>/<repo>/actions/workflows/<workflow_id>/dispatches")
        def dispatch(owner: str, repo: str, workflow_id: str) -> flask.Response:
            r = repo_or_404(owner, repo)
            gh._check_token(flask.request.headers.get("Authorization"), r, "actions", "write")
            data = body()
            if "return_run_details" in data and gh.run_details == "refused":
                # the answer of a server without the parameter (GitHub Enterprise Server 3.19)
                raise GitHubError(422, 'Invalid request.\n\n"return_run_details" is not a permitted key.')
            wf = gh._workflow(r, workflow_id, data.get("ref"))
            if wf is None:
                raise GitHubError(404, "Not Found")
            if wf.state != "active":
                raise GitHubError(422, "Cannot trigger a 'workflow_dispatch' on a disabled workflow")
            ref = str(data.get("ref", ""))
            branch = ref.removeprefix("refs/heads/")
            if branch not in r.branches:
                raise GitHubError(422, f"No ref found for: {ref}")
            if not wf.dispatchable:
                raise GitHubError(422, "Workflow does not have 'workflow_dispatch' trigger")
            inputs = data.get("inputs") or {}
            unexpected = sorted(set(inputs) - set(wf.inputs))
            if unexpected:
                raise GitHubError(422, f"Unexpected inputs provided: {json.dumps(unexpected)}")
            for name, spec in wf.inputs.items():
                if spec.get("required") and name not in inputs and spec.get("default") is None:
                    raise GitHubError(422, f"Required input '{name}' not provided")
            values = {name: inputs.get(name, spec.get("default", "")) for name, spec in wf.inputs.items()}
            title = render_run_name(wf.run_name, values) if wf.run_name else wf.name
            with gh.lock:
                number = 1 + sum(
                    1 for x in gh.runs.values() if x.workflow.path == wf.path and x.repo == r.name
                )
                run = Run(next(gh._ids), r.owner, r.name, wf, title, branch, values, run_number=number)
                gh.runs[run.id] = run
            if data.get("return_run_details") is True and gh.run_details == "returned":
                api = f"{gh.url}/repos/{r.full_name}/actions/runs/{run.id}"
                return json_response(
                    {
                        "workflow_run_id": run.id,
                        "run_url": api,
                        "html_url": f"https://github.com/{r.full_name}/actions/runs/{run.id}",
                    }
                )
            return flask.Response(status=204)

        def list_runs(r: Repository, wf: Workflow | None) -> flask.Response:
            gh._check_token(flask.request.headers.get("Authorization"), r, "actions", "read")
            args = flask.request.args
            runs = [x for x in gh.runs_of(r.owner, r.name) if wf is None or x.workflow.path == wf.path]
            if args.get("status"):
                status = args["status"]
                runs = [x for x in runs if status in (x.status, x.conclusion)]
            if args.get("branch"):
                runs = [x for x in runs if x.head_branch == args["branch"]]
            if args.get("event"):
                runs = [x for x in runs if x.event == args["event"]]
            if args.get("created"):
                runs = [x for x in runs if _created_matches(x.created_at, args["created"])]
            runs.sort(key=lambda x: (x.created_at, x.id), reverse=True)
            per_page = min(int(args.get("per_page", 30)), 100)
            page = max(int(args.get("page", 1)), 1)
            chunk = runs[(page - 1) * per_page : page * per_page]
            return json_response(
                {"total_count": len(runs), "workflow_runs": [gh._run_json(x) for x in chunk]}
            )

        @app.get("/repos/<owner>/<repo>/actions/runs")
        def list_repo_runs(owner: str, repo: str) -> flask.Response:
            return list_runs(repo_or_404(owner, repo), None)

        @app.get("/repos/<owner>/<repo>/actions/workflows/<workflow_id>")
        def get_workflow(owner: str, repo: str, workflow_id: str) -> flask.Response:
            r = repo_or_404(owner, repo)
            gh._check_token(flask.request.headers.get("Authorization"), r, "actions", "read")
            # GitHub registers a workflow file pushed to any branch; the default branch's copy wins
            for branch in [r.default_branch, *sorted(r.branches - {r.default_branch})]:
                wf = gh._workflow(r, workflow_id, branch)
                if wf is not None:
                    return json_response(gh._workflow_json(r, wf))
            raise GitHubError(404, "Not Found")

        @app.get("/repos/<owner>/<repo>/actions/workflows/<workflow_id>/runs")
        def list_workflow_runs(owner: str, repo: str, workflow_id: str) -> flask.Response:
            r = repo_or_404(owner, repo)
            gh._check_token(flask.request.headers.get("Authorization"), r, "actions", "read")
            wf = gh._workflow(r, workflow_id, None)
            if wf is None:
                raise GitHubError(404, "Not Found")
            return list_runs(r, wf)

        @app.get("/repos/<owner>/<repo>/actions/runs/<int:run_id>")
        def get_run(owner: str, repo: str, run_id: int) -> flask.Response:
            r = repo_or_404(owner, repo)
            gh._check_token(flask.request.headers.get("Authorization"), r, "actions", "read")
            run = gh.runs.get(run_id)
            if run is None or (run.owner.lower(), run.repo.lower()) != (r.owner.lower(), r.name.lower()):
                raise GitHubError(404, "Not Found")
            return json_response(gh._run_json(run))

        @app.post("/repos/<owner>/<repo>/actions/runs/<int:run_id>/cancel")
        def cancel_run(owner: str, repo: str, run_id: int) -> flask.Response:
            r = repo_or_404(owner, repo)
            gh._check_token(flask.request.headers.get("Authorization"), r, "actions", "write")
            with gh.lock:
                run = gh.runs.get(run_id)
                if run is None or (run.owner.lower(), run.repo.lower()) != (r.owner.lower(), r.name.lower()):
                    raise GitHubError(404, "Not Found")
                if run.status == "completed":
                    raise GitHubError(409, "Cannot cancel a workflow run that is completed.")
                # GitHub cancels asynchronously; here the run is cancelled at once
                gh.advance_run(run.id, "completed", "cancelled")
            return json_response({}, 202)

        # contents

        @app.get("/repos/<owner>/<repo>/contents/<path:path>")
        def get_content(owner: str, repo: str, path: str) -> flask.Response:
            r = repo_or_404(owner, repo)
            gh._check_token(flask.request.headers.get("Authorization"), r, "contents", "read")
            branch = flask.request.args.get("ref") or r.default_branch
            if branch not in r.branches:
                raise GitHubError(404, f"No commit found for the ref {branch}")
            entry = r.files.get(branch, {}).get(path)
            if entry is None:
                raise GitHubError(404, "Not Found")
            return json_response(gh._content_json(r, path, entry, branch))

        @app.put("/repos/<owner>/<repo>/contents/<path:path>")
        def put_content(owner: str, repo: str, path: str) -> flask.Response:
            r = repo_or_404(owner, repo)
            gh._check_token(flask.request.headers.get("Authorization"), r, "contents", "write")
            if path.startswith(".github/workflows/"):
                # GitHub refuses workflow changes without the workflows permission
                auth = flask.request.headers.get("Authorization", "")
                record = gh.tokens.get(auth.split(" ", 1)[-1].strip())
                if record is not None and record.permissions.get("workflows") != "write":
                    raise GitHubError(403, "Resource not accessible by integration")
            data = body()
            if not isinstance(data.get("message"), str) or not isinstance(data.get("content"), str):
                raise GitHubError(
                    422, 'Invalid request.\n\n"message" and "content" are required.', errors=None
                )
            branch = data.get("branch") or r.default_branch
            if branch not in r.branches:
                raise GitHubError(404, f"Branch {branch} not found")
            try:
                content = base64.b64decode(data["content"], validate=True)
            except ValueError:
                raise GitHubError(422, "content is not valid Base64") from None
            files = r.files.setdefault(branch, {})
            existing = files.get(path)
            if existing is not None and not data.get("sha"):
                raise GitHubError(422, 'Invalid request.\n\n"sha" wasn\'t supplied.')
            if existing is not None and data["sha"] != existing.sha:
                raise GitHubError(409, f"{path} does not match {data['sha']}")
            if existing is None and data.get("sha"):
                raise GitHubError(409, f"{path} does not match {data['sha']}")
            with gh.lock:
                files[path] = FileEntry(content)
                commit_sha = hashlib.sha1(f"{path}{len(r.commits)}{data['message']}".encode()).hexdigest()  # noqa: S324
                r.commits.append(Commit(commit_sha, branch, path, data["message"], existing is None))
            out = gh._example(
                "file-commit-example-for-creating-a-file"
                if existing is None
                else "file-commit-example-for-updating-a-file"
            )
            info = gh._content_json(r, path, files[path], branch)
            out["content"] = {k: v for k, v in info.items() if k not in ("content", "encoding")}
            out["commit"].update(
                sha=commit_sha,
                message=data["message"],
                url=f"{gh.url}/repos/{r.full_name}/git/commits/{commit_sha}",
                html_url=f"https://github.com/{r.full_name}/commit/{commit_sha}",
            )
            return json_response(out, 201 if existing is None else 200)

        # pull requests and comments

        @app.post("/repos/<owner>/<repo>/pulls")
        def create_pull(owner: str, repo: str) -> flask.Response:
            r = repo_or_404(owner, repo)
            gh._check_token(flask.request.headers.get("Authorization"), r, "pull_requests", "write")
            data = body()
            head = str(data.get("head", "")).split(":", 1)[-1]
            base = str(data.get("base", ""))
            if not head or not base or not data.get("title"):
                raise GitHubError(
                    422,
                    "Validation Failed",
                    errors=[
                        {"resource": "PullRequest", "field": f, "code": "missing_field"}
                        for f in ("title", "head", "base")
                        if not data.get(f)
                    ],
                )
            if base not in r.branches:
                raise GitHubError(
                    422,
                    "Validation Failed",
                    errors=[{"resource": "PullRequest", "field": "base", "code": "invalid"}],
                )
            key = (r.owner.lower(), r.name.lower())
            with gh.lock:
                if any(p.head == head and p.state == "open" for p in gh.pulls.get(key, [])):
                    raise GitHubError(
                        422,
                        "Validation Failed",
                        errors=[
                            {
                                "resource": "PullRequest",
                                "code": "custom",
                                "message": f"A pull request already exists for {r.owner}:{head}.",
                            }
                        ],
                    )
                number = 1 + sum(len(v) for k, v in gh.pulls.items() if k == key)
                pr = PullRequest(
                    number,
                    r.owner,
                    r.name,
                    str(data["title"]),
                    head,
                    base,
                    data.get("body"),
                    bool(data.get("draft", False)),
                )
                gh.pulls.setdefault(key, []).append(pr)
            return json_response(gh._pull_json(pr), 201)

        @app.get("/repos/<owner>/<repo>/pulls")
        def list_pulls(owner: str, repo: str) -> flask.Response:
            r = repo_or_404(owner, repo)
            gh._check_token(flask.request.headers.get("Authorization"), r, "pull_requests", "read")
            args = flask.request.args
            state = args.get("state", "open")
            sort = args.get("sort", "created")
            direction = args.get("direction", "desc" if sort == "created" else "asc")
            for name, value, allowed in (
                ("state", state, ("open", "closed", "all")),
                ("sort", sort, ("created", "updated", "popularity", "long-running")),
                ("direction", direction, ("asc", "desc")),
            ):
                if value not in allowed:
                    raise GitHubError(
                        422,
                        "Validation Failed",
                        errors=[
                            {"resource": "PullRequest", "field": name, "code": "invalid", "value": value}
                        ],
                    )
            with gh.lock:
                pulls = gh.pull_requests(r.owner, r.name)
            if state != "all":
                pulls = [p for p in pulls if p.state == state]
            if args.get("head"):
                # GitHub's format is ``user:ref-name``: the head's owner and branch
                user, _, ref = args["head"].rpartition(":")
                pulls = [p for p in pulls if user.lower() == p.owner.lower() and ref == p.head]
            if args.get("base"):
                pulls = [p for p in pulls if p.base == args["base"]]
            # every sort falls back to creation order: the fake keeps no activity or comment counts
            pulls.sort(key=lambda p: (p.created_at, p.number), reverse=direction == "desc")
            per_page = min(int(args.get("per_page", 30)), 100)
            page = max(int(args.get("page", 1)), 1)
            chunk = pulls[(page - 1) * per_page : page * per_page]
            return json_response([gh._pull_simple_json(p) for p in chunk])

        @app.get("/repos/<owner>/<repo>/issues/<int:number>/comments")
        def list_comments(owner: str, repo: str, number: int) -> flask.Response:
            r = repo_or_404(owner, repo)
            gh._check_token(flask.request.headers.get("Authorization"), r, "issues", "read")
            gh._issue_or_404(r, number)
            items = gh.comments.get((r.owner.lower(), r.name.lower(), number), [])
            # paged as GitHub pages it (30 a page by default, 100 at most)
            per_page = min(int(flask.request.args.get("per_page", 30)), 100)
            page = max(int(flask.request.args.get("page", 1)), 1)
            chunk = items[(page - 1) * per_page : page * per_page]
            return json_response([gh._comment_json(r, c) for c in chunk])

        @app.post("/repos/<owner>/<repo>/issues/<int:number>/comments")
        def create_comment(owner: str, repo: str, number: int) -> flask.Response:
            r = repo_or_404(owner, repo)
            auth = flask.request.headers.get("Authorization")
            try:
                gh._check_token(auth, r, "issues", "write")
            except GitHubError:
                gh._check_token(auth, r, "pull_requests", "write")  # PR conversations accept either
            gh._issue_or_404(r, number)
            data = body()
            if not isinstance(data.get("body"), str):
                raise GitHubError(
                    422,
                    "Validation Failed",
                    errors=[{"resource": "IssueComment", "field": "body", "code": "missing_field"}],
                )
            with gh.lock:
                c = IssueComment(next(gh._ids), number, data["body"])
                gh.comments.setdefault((r.owner.lower(), r.name.lower(), number), []).append(c)
            return json_response(gh._comment_json(r, c), 201)

        return app

    # -- internals --

    def _documented(self, rule: Any, method: str, status: int) -> bool:
        if rule is None:
            return False
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        if (method.upper(), path, status) in AMBIGUOUS_ANSWERS:
            return False
        spec = self.server.spec.document
        op = spec.get("paths", {}).get(path, {}).get(method.lower(), {})
        return str(status) in op.get("responses", {}) or "default" in op.get("responses", {})

    def _note_undocumented(self, status: int, payload: dict[str, Any]) -> None:
        """Check an off-description error body against GitHub's ``basic-error`` schema."""
        from openapi_schema_validator import OAS30Validator

        schema = dict(self.server.spec.document["components"]["schemas"]["basic-error"])
        errors = [e.message for e in OAS30Validator(schema).iter_errors(payload)]
        line = f"{flask.request.method} {flask.request.path} -> {status}: {payload['message']}"
        with self.lock:
            self.undocumented.append(line)
            if errors:
                self.server.violations.append(f"undocumented answer {line} breaks basic-error: {errors}")

    def _installation_json(self, inst: Installation) -> dict[str, Any]:
        out = self._example("installation")
        out.update(
            id=inst.id,
            app_id=self.app_id,
            target_id=inst.id,
            permissions=dict(inst.permissions),
            repository_selection="all" if inst.repositories is None else "selected",
            access_tokens_url=f"{self.url}/app/installations/{inst.id}/access_tokens",
            html_url=f"https://github.com/settings/installations/{inst.id}",
        )
        out["account"]["login"] = inst.owner
        return out

    def _workflow(self, r: Repository, workflow_id: str, ref: str | None) -> Workflow | None:
        branch = (ref or r.default_branch).removeprefix("refs/heads/")
        files = r.files.get(branch) or r.files.get(r.default_branch, {})
        for path in [p for p in files if p.startswith(".github/workflows/")]:
            file = path.rsplit("/", 1)[-1]
            wf = self._workflow_from_file(r, path, files[path])
            if workflow_id in (file, str(wf.id)):
                return wf
        for file, wf in r.workflows.items():
            if workflow_id in (file, str(wf.id)):
                return wf
        return None

    def _workflow_from_file(self, r: Repository, path: str, entry: FileEntry) -> Workflow:
        doc = _parse_workflow_yaml(entry.content.decode("utf-8", "replace"))
        triggers = _triggers(doc)
        dispatch: Any = None
        if isinstance(triggers, dict):
            dispatchable = "workflow_dispatch" in triggers
            dispatch = triggers.get("workflow_dispatch")
        elif isinstance(triggers, list):
            dispatchable = "workflow_dispatch" in triggers
        else:
            dispatchable = triggers == "workflow_dispatch"
        inputs = (dispatch or {}).get("inputs") or {} if isinstance(dispatch, dict) else {}
        file = path.rsplit("/", 1)[-1]
        # keep a stable id (and state) per file so runs of a rewritten workflow stay its runs
        registered = r.workflows.get(file)
        wf_id = (
            registered.id
            if registered
            else int(
                hashlib.sha1(f"{r.full_name}/{path}".encode()).hexdigest()[  # noqa: S324
                    :7
                ],
                16,
            )
        )
        return Workflow(
            wf_id,
            path,
            str(doc.get("name") or path),
            dispatchable,
            {k: dict(v or {}) for k, v in inputs.items()},
            doc.get("run-name"),
            r.workflow_states.get(file, "active"),
            registered.created_at if registered else _now(),
        )

    def _issue_or_404(self, r: Repository, number: int) -> None:
        # pull requests are issues too; plain issues are not modelled beyond PRs
        if not any(p.number == number for p in self.pulls.get((r.owner.lower(), r.name.lower()), [])):
            raise GitHubError(404, "Not Found")


def _created_matches(created: datetime, query: str) -> bool:
    """GitHub's ``created`` filter: ``>=DATE``, ``<=DATE``, ``>DATE``, ``<DATE``, ``A..B`` or ``DATE``."""

    def parse(text: str) -> datetime:
        text = text.strip().replace("Z", "+00:00")
        value = datetime.fromisoformat(text)
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    if ".." in query:
        lo, hi = query.split("..", 1)
        return (lo in ("", "*") or created >= parse(lo)) and (hi in ("", "*") or created <= parse(hi))
    for op in (">=", "<=", ">", "<"):
        if query.startswith(op):
            when = parse(query[len(op) :])
            return {">=": created >= when, "<=": created <= when, ">": created > when, "<": created < when}[
                op
            ]
    return created.date() == parse(query).date()


__all__ = [
    "FakeGitHub",
    "GitHubError",
    "blob_sha",
    "generate_private_key",
    "github_subset_spec",
    "render_run_name",
]
