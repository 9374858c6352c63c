"""The core's GitHub REST client.

:class:`GitHub` holds the orchestrator's credentials (a GitHub App, or a personal token for small
installs) and hands out repository tokens and :class:`Repo` clients. Every call goes through
:class:`~aiimpl_core.http.HttpClient` (timeouts, retries honouring ``Retry-After`` and GitHub's
rate-limit headers, errors as :class:`~aiimpl_core.errors.ProviderError`) with GitHub's media type
and ``X-GitHub-Api-Version: 2022-11-28``.
"""

from __future__ import annotations

import base64
import hmac
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import logs
from ..errors import DispatchUnanswered, ProviderError, ProviderNotConfigured
from ..http import HttpClient, may_have_been_done, path_segment
from ..session.api import token_digest
from .app_auth import (
    TOKENS,
    CachedToken,
    TokenCache,
    app_jwt,
    load_private_key,
    permissions_key,
)

log = logging.getLogger(__name__)

API_VERSION = "2022-11-28"
DEFAULT_API_URL = "https://api.github.com"
HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION}

#: what a session does with its token: push a branch, open the PR, comment, read its own run
SESSION_PERMISSIONS: Mapping[str, str] = {
    "contents": "write",
    "pull_requests": "write",
    "issues": "write",
    "actions": "read",
}
#: what the orchestrator's runner backend does: dispatch workflows, read runs, install workflow
#: files (GitHub requires ``workflows: write`` to change anything under ``.github/workflows``)
ORCHESTRATOR_PERMISSIONS: Mapping[str, str] = {
    "actions": "write",
    "contents": "write",
    "workflows": "write",
}
#: the dispatch's request for the run it makes (GitHub answers 200 with the run's id and URLs)
RUN_DETAILS = "return_run_details"
#: personal tokens carry no expiry we could read; a session is told a day, far beyond its life
PERSONAL_TOKEN_LIFETIME = timedelta(days=1)
#: runs a page of a workflow run listing asks for (GitHub's most)
RUNS_PER_PAGE = 100
#: GitHub lists at most this many runs of a listing filtered by ``event`` (or ``branch``, ``status``,
#: ``created``, …): the pages past them come back empty
FILTERED_RUNS_LIMIT = 1000
#: pages of runs read at most: as deep as a filtered listing goes
RUN_PAGES = FILTERED_RUNS_LIMIT // RUNS_PER_PAGE
#: comments a page of an issue's comments asks for (GitHub's most), and pages read at most
COMMENTS_PER_PAGE = 100
COMMENT_PAGES = 100

HttpFactory = Callable[..., HttpClient]


def _default_http(base_url: str = "", **kwargs: Any) -> HttpClient:
    return HttpClient(base_url, **kwargs)


def _segment(value: str, what: str) -> str:
    """An owner, repository name or workflow file as one segment of a path (``..`` refused:
    :func:`~aiimpl_core.http.path_segment`)."""
    return path_segment(value, provider="github", what=what)


def _workflow(file: str) -> str:
    return _segment(file, "workflow file")


def _file_path(path: str) -> str:
    """A file's path in a repository, each of its segments encoded apart (``..`` refused)."""
    return "/".join(_segment(part, "file path") for part in path.split("/"))


def github_message(exc: ProviderError) -> str:
    """GitHub's own message from a failed call (``message`` plus any ``errors[].message``)."""
    detail = exc.detail
    if isinstance(detail, dict) and isinstance(detail.get("message"), str):
        message = detail["message"]
        errors = detail.get("errors")
        if isinstance(errors, list):
            extra = [
                e.get("message") for e in errors if isinstance(e, dict) and isinstance(e.get("message"), str)
            ]
            if extra:
                message = f"{message}: {'; '.join(extra)}"
        return message
    return exc.message


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _refuses_run_details(exc: ProviderError) -> bool:
    """Whether a dispatch was refused for its ``return_run_details`` key (GitHub Enterprise Server
    before the parameter: ``422`` ``"return_run_details" is not a permitted key.``)."""
    return exc.status in (400, 422) and RUN_DETAILS in github_message(exc)


#: the API URLs whose server refused ``return_run_details``, and when (``time.monotonic()``): their
#: dispatches go without it, rather than two requests each, until :data:`RUN_DETAILS_RECHECK` has
#: passed (the server may have been upgraded meanwhile)
_REFUSED_RUN_DETAILS: dict[str, float] = {}
RUN_DETAILS_RECHECK = 3600.0


class ListingIncomplete(ProviderError):
    """A listing GitHub ended before every item asked for: the pages read at most were all full, a
    page held fewer items than GitHub counts, or a page repeated the one before it. The items read
    before it are good; those past it are unknown, not missing.

    :param reached: the ``created_at`` of the oldest run read (``None``: none was).
    """

    def __init__(self, message: str, *, reached: datetime | None, **extra: Any) -> None:
        super().__init__(message, provider="github", **extra)
        self.reached = reached


@dataclass(frozen=True)
class DispatchedRun:
    """The run a workflow dispatch made, as GitHub's answer names it."""

    id: str
    #: the run's page (``html_url``)
    html_url: str | None = None
    #: the run in the REST API (``run_url``)
    api_url: str | None = None


@dataclass(frozen=True)
class RepoFile:
    """A file read through the contents API."""

    path: str
    sha: str
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8")


class GitHub:
    """GitHub credentials and the clients built on them.

    :param api_url: REST API base (``AIIMPL_GITHUB_API_URL``).
    :param app_id: GitHub App id; with ``private_key`` selects App authentication.
    :param private_key: the App's key: PEM text or a path to a PEM file.
    :param token: a personal access token, used when no App is configured.
    :param http: builds the :class:`HttpClient` (a provider context's ``http``).
    """

    def __init__(
        self,
        api_url: str | None = None,
        *,
        app_id: str | int | None = None,
        private_key: str | None = None,
        token: str | None = None,
        http: HttpFactory | None = None,
        cache: TokenCache = TOKENS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        self.app_id = str(app_id) if app_id not in (None, "") else None
        self._private_key_setting = private_key or None
        self._private_key: str | None = None
        self._token = token or None
        self.cache = cache
        self.clock = clock
        self.http = (http or _default_http)(self.api_url, provider="github", headers=HEADERS)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], http: HttpFactory | None = None) -> GitHub:
        """Build from ``AIIMPL_GITHUB_*`` settings (an app's ``config`` or a provider context's)."""
        return cls(
            config.get("AIIMPL_GITHUB_API_URL") or DEFAULT_API_URL,
            app_id=config.get("AIIMPL_GITHUB_APP_ID"),
            private_key=config.get("AIIMPL_GITHUB_PRIVATE_KEY"),
            token=config.get("AIIMPL_GITHUB_TOKEN"),
            http=http,
        )

    # -- credentials --

    @property
    def mode(self) -> str | None:
        """``app``, ``token`` or ``None`` (not configured)."""
        if self.app_id and self._private_key_setting:
            return "app"
        if self._token:
            return "token"
        return None

    def is_configured(self) -> bool:
        return self.mode is not None

    def _require(self) -> str:
        mode = self.mode
        if mode is None:
            raise ProviderNotConfigured(
                "GitHub is not configured: set AIIMPL_GITHUB_APP_ID and AIIMPL_GITHUB_PRIVATE_KEY, "
                "or AIIMPL_GITHUB_TOKEN",
                provider="github",
            )
        return mode

    def _app_headers(self) -> dict[str, str]:
        if self._private_key is None:
            self._private_key = load_private_key(self._private_key_setting or "")
        assert self.app_id is not None
        # the JWT is checked against GitHub's clock, so it always uses the wall clock
        return {"Authorization": f"Bearer {app_jwt(self.app_id, self._private_key)}"}

    def installation_id(self, owner: str, repo: str) -> int:
        """The App's installation on a repository (404 from GitHub: the App is not installed there),
        looked up now; the tokens of the repository are then asked for under it."""
        self._require()
        try:
            resp = self.http.get(
                f"/repos/{_segment(owner, 'owner')}/{_segment(repo, 'repository name')}/installation",
                headers=self._app_headers(),
            )
        except ProviderError as exc:
            if exc.status == 404:
                # no detail: GitHub's own body says only "Not Found", which callers that show a
                # remote's message (gap-fill's detail, a sync's error) would show instead of this
                raise ProviderError(
                    f"the GitHub App is not installed on {owner}/{repo} (or there is no such repository)",
                    provider="github", status=404,
                ) from None
            raise
        try:
            installation = int(resp.json()["id"])
        except (ValueError, KeyError, TypeError):
            raise ProviderError(
                f"github: the installation answer for {owner}/{repo} could not be read",
                provider="github",
                status=resp.status_code,
            ) from None
        self.cache.put_installation(self._installation_key(owner, repo), installation)  # (for _mint)
        return installation

    def repository_token(
        self, owner: str, repo: str, permissions: Mapping[str, str] | None = None
    ) -> tuple[str, datetime]:
        """A token for one repository: an installation token limited to ``repo`` and
        ``permissions`` (default: what a session needs), or the personal token.

        Installation tokens are cached until five minutes before they expire.
        :raises ProviderError: when GitHub refuses or is unreachable.
        """
        if self._require() == "token":
            assert self._token is not None
            return self._token, self.clock() + PERSONAL_TOKEN_LIFETIME
        perms = dict(permissions or SESSION_PERMISSIONS)
        key = self._token_key(owner, repo, perms)
        now = self.clock()
        cached = self.cache.get(key, now)
        if cached is not None:
            return cached.token, cached.expires_at
        with self.cache.lock_for(key):
            cached = self.cache.get(key, self.clock())
            if cached is not None:  # another thread minted it while we waited
                return cached.token, cached.expires_at
            resp = self._mint(owner, repo, perms)
            try:
                body = resp.json()
                token = CachedToken(str(body["token"]), _parse_time(str(body["expires_at"])))
                logs.mask(token.token)
            except (ValueError, KeyError, TypeError):
                raise ProviderError(
                    "github: the installation token answer could not be read",
                    provider="github",
                    status=resp.status_code,
                ) from None
            self.cache.put(key, token)
            log.info(
                "minted a GitHub installation token for %s/%s (expires %s)",
                owner,
                repo,
                token.expires_at.isoformat(),
            )
            return token.token, token.expires_at

    def _mint(self, owner: str, repo: str, permissions: dict[str, str]) -> Any:
        """GitHub's answer to a new installation token for ``owner/repo``. The repository's
        installation is looked up once and remembered (each use's permissions are a token of their
        own, each minted hourly); a token GitHub refuses under a remembered installation, 404 (the
        App installed anew: the old installation is gone) or 422 (the repository taken out of it),
        is asked for once more under the installation looked up now, if it is another."""
        where = self._installation_key(owner, repo)
        remembered = self.cache.installation(where)
        if remembered is None:
            return self._token_request(self.installation_id(owner, repo), repo, permissions)
        try:
            return self._token_request(remembered, repo, permissions)
        except ProviderError as exc:
            if exc.status not in (404, 422):
                raise
            self.cache.discard_installation(where, remembered)
            installation = self.installation_id(owner, repo)  # (404: the App is not installed there)
            if installation == remembered:
                raise  # (a refusal of the token's own: a permission the installation lacks)
            return self._token_request(installation, repo, permissions)

    def _token_request(self, installation: int, repo: str, permissions: dict[str, str]) -> Any:
        return self.http.post(
            f"/app/installations/{installation}/access_tokens",
            headers=self._app_headers(),
            json={"repositories": [repo], "permissions": permissions},
            # minting twice is harmless (the spare token just expires), so a 5xx is retried
            retry_unsafe=True,
        )

    def _installation_key(self, owner: str, repo: str) -> tuple[object, ...]:
        """Where the installation of ``owner/repo`` is remembered."""
        return (self.api_url, self.app_id, owner.lower(), repo.lower())

    def _token_key(self, owner: str, repo: str, permissions: Mapping[str, str]) -> tuple[object, ...]:
        """Where an installation token for ``owner/repo`` with ``permissions`` is cached."""
        return (*self._installation_key(owner, repo), permissions_key(dict(permissions)))

    def forget_token(self, owner: str, repo: str, permissions: Mapping[str, str], token: str) -> bool:
        """Drop an installation token GitHub refused (401: revoked before its expiry, as when the
        App is suspended or reinstalled, or the token was found pushed somewhere public); whether
        there was one to drop (a personal token is the setting's: nothing to mint anew)."""
        if self._require() == "token":
            return False
        key = self._token_key(owner, repo, permissions)
        self.cache.discard(key, token)
        return True

    def forget_refused_token(
        self, owner: str, repo: str, digest: str, permissions: Mapping[str, str] | None = None
    ) -> bool:
        """Drop the cached installation token whose SHA-256 (hexadecimal) is ``digest``: a session
        GitHub refused it told us so (``POST /api/token``'s ``refusedTokenSha256``); whether one
        was dropped. A token other than the one refused (another worker's, or minted since) stays."""
        if self._require() == "token":
            return False
        perms = dict(permissions or SESSION_PERMISSIONS)
        key = self._token_key(owner, repo, perms)
        cached = self.cache.get(key, self.clock())
        if cached is None or not hmac.compare_digest(token_digest(cached.token), digest.lower()):
            return False
        self.cache.discard(key, cached.token)
        return True

    def repo(self, owner: str, repo: str, permissions: Mapping[str, str] | None = None) -> Repo:
        """A client for one repository, authenticated with :meth:`repository_token`."""
        return Repo(self, owner, repo, dict(permissions or ORCHESTRATOR_PERMISSIONS))


class Repo:
    """The REST calls on one repository the project makes."""

    def __init__(self, github: GitHub, owner: str, name: str, permissions: Mapping[str, str]) -> None:
        self.github = github
        self.owner = owner
        self.name = name
        self.permissions = permissions
        self.base = f"/repos/{_segment(owner, 'owner')}/{_segment(name, 'repository name')}"

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    def _auth(self) -> dict[str, str]:
        token, _ = self.github.repository_token(self.owner, self.name, self.permissions)
        return {"Authorization": f"Bearer {token}"}

    def _refused_token(self, exc: ProviderError, headers: Mapping[str, str]) -> bool:
        """Whether ``exc`` is GitHub refusing an installation token revoked before its expiry (as
        when the App is suspended or reinstalled, or the token was found pushed somewhere public),
        which is then dropped: cached, it failed every call on the repository for the rest of its
        hour. A request refused with 401 was not carried out: it is sent once more, with a fresh
        token."""
        token = headers["Authorization"].removeprefix("Bearer ")
        return exc.status == 401 and self.github.forget_token(self.owner, self.name, self.permissions, token)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = self._auth()
        try:
            return self.github.http.request(method, self.base + path, headers=headers, **kwargs)
        except ProviderError as exc:
            if not self._refused_token(exc, headers):
                raise
        return self.github.http.request(method, self.base + path, headers=self._auth(), **kwargs)

    def _json(self, resp: Any) -> Any:
        return self.github.http.json(resp)

    # -- Actions --

    def dispatch_workflow(self, workflow: str, ref: str, inputs: Mapping[str, str]) -> DispatchedRun | None:
        """``workflow_dispatch`` a workflow (file name or id) on ``ref`` with ``inputs``, asking for
        the run it makes (``return_run_details``: GitHub answers ``200`` with the run's id and URLs).

        :returns: the run, or ``None`` when the dispatch was made but its answer names no run: a
            server without the parameter (GitHub Enterprise Server before it) answers ``204``, or
            refuses the key with a ``422``, and is then sent the dispatch once more without it (a
            refused request made no run), as are its next dispatches for an hour; a ``200`` whose
            body cannot be read names none either.
        :raises DispatchUnanswered: when the dispatch went out but its answer was lost (none came
            back: a read timeout, a connection dropped after the request was sent; or a 5xx did):
            a run may have been made all the same.
        :raises ProviderError: when GitHub refuses, or the dispatch could not be sent (no token, no
            connection): no run was made.
        """
        path = f"/actions/workflows/{_workflow(workflow)}/dispatches"
        body: dict[str, Any] = {"ref": ref, "inputs": dict(inputs)}
        refused_at = _REFUSED_RUN_DETAILS.get(self.github.api_url)
        ask = refused_at is None or time.monotonic() - refused_at >= RUN_DETAILS_RECHECK
        if ask:
            body[RUN_DETAILS] = True
        try:
            resp = self._send_dispatch(path, body)
        except ProviderError as exc:
            if not ask or isinstance(exc, DispatchUnanswered) or not _refuses_run_details(exc):
                raise
            log.info(
                "%s does not return run details for a workflow dispatch (%s); dispatching %s without them",
                self.github.api_url, github_message(exc), workflow,
            )
            _REFUSED_RUN_DETAILS[self.github.api_url] = time.monotonic()
            del body[RUN_DETAILS]
            resp = self._send_dispatch(path, body)
        if resp.status_code != 200:
            return None
        try:
            answer = self._json(resp)
            run_id = answer["workflow_run_id"]
            if isinstance(run_id, bool) or not isinstance(run_id, int):
                raise TypeError(run_id)
        except (ProviderError, KeyError, TypeError) as exc:
            # the dispatch was made: its run is found by name as a 204's is
            what = exc.message if isinstance(exc, ProviderError) else "no workflow_run_id in it"
            log.warning("the answer to dispatching %s in %s named no run: %s", workflow, self.full_name, what)
            return None
        html_url = answer.get("html_url")
        api_url = answer.get("run_url")
        return DispatchedRun(
            str(run_id),
            html_url if isinstance(html_url, str) else None,
            api_url if isinstance(api_url, str) else None,
        )

    def _send_dispatch(self, path: str, body: dict[str, Any]) -> Any:
        """POST a dispatch; a failure after it may have reached GitHub is :class:`DispatchUnanswered`."""
        for attempt in (1, 2):
            headers = self._auth()  # a token that cannot be had: nothing was sent
            try:
                return self.github.http.request("POST", self.base + path, headers=headers, json=body)
            except ProviderError as exc:
                if attempt == 1 and self._refused_token(exc, headers):
                    continue  # (a 401 did nothing)
                if not may_have_been_done(exc):
                    raise
                raise DispatchUnanswered.of(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def get_workflow(self, workflow: str) -> dict[str, Any] | None:
        """A workflow (file name or id) as GitHub has registered it, ``state`` included (``active``,
        ``disabled_manually``, ``disabled_inactivity``, ``disabled_fork``, …); ``None`` on a 404,
        which is also GitHub's answer for a file it has not registered as a workflow (yet)."""
        resp = self._call("GET", f"/actions/workflows/{_workflow(workflow)}", expected=(200, 404))
        if resp.status_code == 404:
            return None
        body = self._json(resp)
        if not isinstance(body, dict):
            raise ProviderError(
                f"github: the workflow answer for {workflow} in {self.full_name} could not be read",
                provider="github",
                status=resp.status_code,
            )
        return body

    def list_workflow_runs(
        self,
        workflow: str | None = None,
        *,
        event: str | None = None,
        branch: str | None = None,
        per_page: int = 100,
        page: int = 1,
    ) -> dict[str, Any]:
        """One page of runs, newest first (``workflow`` ``None``: every workflow of the repository)."""
        params: dict[str, Any] = {"per_page": per_page, "page": page}
        if event:
            params["event"] = event
        if branch:
            params["branch"] = branch
        path = f"/actions/workflows/{_workflow(workflow)}/runs" if workflow else "/actions/runs"
        return self._json(self._call("GET", path, params=params))

    def iter_workflow_runs(
        self,
        since: datetime,
        *,
        workflow: str | None = None,
        event: str | None = None,
        per_page: int | None = None,
        max_pages: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Runs created at or after ``since``, newest first, paging only as deep as needed
        (``per_page`` runs a page, :data:`RUNS_PER_PAGE` by default; at most ``max_pages`` pages,
        :data:`RUN_PAGES`: as deep as GitHub lists a filtered listing).

        GitHub's ``created`` filter would do this server-side, but its description types the
        parameter as a plain date-time while the service expects search syntax (``>=…``); paging
        newest-first and stopping at the first older run needs no such parameter.

        Pages are asked for by number, never by following an answer's ``Link`` header: no answer
        can send the next request, and the token with it, anywhere but this listing.

        :raises ListingIncomplete: after yielding every run read, when runs since ``since`` may lie
            past them: the pages read at most were all full (GitHub lists no more of a filtered
            listing), a page held fewer runs than asked though its ``total_count`` counts more, or
            a page repeated the one before it (its ``page`` dropped on the way). Taking the end of
            what was read for the end of the runs called a run past it missing.
        :raises ProviderError: when a page cannot be read (no ``workflow_runs`` list of runs with
            their ``created_at``), as when GitHub refuses.
        """
        per_page = per_page or RUNS_PER_PAGE
        max_pages = max_pages or RUN_PAGES
        reached: datetime | None = None
        previous: list[Any] | None = None
        for page in range(1, max_pages + 1):
            body = self.list_workflow_runs(workflow, event=event, per_page=per_page, page=page)
            runs, total = self._runs_page(body, page)
            ids = [run.get("id") for run, _ in runs]
            if runs and ids == previous:
                raise ListingIncomplete(
                    f"github: page {page} of the workflow runs of {self.full_name} repeats page "
                    f"{page - 1} (is the page parameter dropped on the way?): the runs past it were not read",
                    reached=reached,
                )
            for run, created in runs:
                if created < since:
                    return
                reached = created
                yield run
            if len(runs) < per_page:
                listed = (page - 1) * per_page + len(runs)
                # (a filtered listing's total_count counts runs past those GitHub lists of it)
                reachable = None if total is None else min(total, FILTERED_RUNS_LIMIT) if event else total
                if reachable is not None and listed < reachable:
                    raise ListingIncomplete(
                        f"github: page {page} of the workflow runs of {self.full_name} holds {len(runs)} "
                        f"runs of the {per_page} asked for, though GitHub counts {total}: the runs past "
                        f"the {listed} listed were not read",
                        reached=reached,
                    )
                return
            previous = ids
        oldest = (reached or since).isoformat()
        raise ListingIncomplete(
            f"github: the workflow runs of {self.full_name} since {since.isoformat()} fill all "
            f"{max_pages} pages of {per_page} read (GitHub lists at most {FILTERED_RUNS_LIMIT} runs of "
            f"a filtered listing): those created before {oldest} were not read",
            reached=reached,
        )

    def _runs_page(self, body: Any, page: int) -> tuple[list[tuple[dict[str, Any], datetime]], int | None]:
        """A page of a run listing: each run with its ``created_at``, and GitHub's ``total_count``
        (``None`` when it gives none).

        :raises ProviderError: when the page is no object with a ``workflow_runs`` list of runs,
            each with a readable ``created_at``: a broken answer is a failed read, never the end of
            the listing (like an answer that is not JSON, it has no ``status``).
        """
        runs = body.get("workflow_runs") if isinstance(body, dict) else None
        out: list[tuple[dict[str, Any], datetime]] = []
        for run in runs if isinstance(runs, list) else ():
            created = run.get("created_at") if isinstance(run, dict) else None
            try:
                when = _parse_time(created) if isinstance(created, str) else None
            except ValueError:
                when = None
            if when is None:
                break
            out.append((run, when if when.tzinfo else when.replace(tzinfo=UTC)))
        if not isinstance(runs, list) or len(out) != len(runs):
            what = "no workflow_runs list" if not isinstance(runs, list) else "a run without its created_at"
            raise ProviderError(
                f"github: page {page} of the workflow runs of {self.full_name} could not be read ({what})",
                provider="github",
            )
        total = body.get("total_count")
        return out, total if isinstance(total, int) and not isinstance(total, bool) else None

    def get_run(self, run_id: int | str) -> dict[str, Any]:
        return self._json(self._call("GET", f"/actions/runs/{int(run_id)}"))

    def cancel_run(self, run_id: int | str) -> bool:
        """Ask GitHub to cancel a workflow run (it answers ``202`` and cancels asynchronously).

        :returns: false when the run had already completed (GitHub's ``409``).
        """
        try:
            self._call("POST", f"/actions/runs/{int(run_id)}/cancel")
        except ProviderError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    # -- contents --

    def get_file(self, path: str, ref: str | None = None) -> RepoFile | None:
        """A file's bytes and blob sha; ``None`` when it does not exist."""
        resp = self._call(
            "GET",
            f"/contents/{_file_path(path)}",
            params={"ref": ref} if ref else None,
            expected=(200, 404),
        )
        if resp.status_code == 404:
            return None
        body = self._json(resp)
        if not isinstance(body, dict) or body.get("type") != "file":
            raise ProviderError(f"github: {path} in {self.full_name} is not a file", provider="github")
        return RepoFile(path, str(body["sha"]), base64.b64decode(body.get("content") or ""))

    def put_file(
        self, path: str, content: bytes, message: str, *, sha: str | None = None, branch: str | None = None
    ) -> dict[str, Any]:
        """Create (no ``sha``) or update (the current blob ``sha``) a file in one commit."""
        body: dict[str, Any] = {"message": message, "content": base64.b64encode(content).decode()}
        if sha:
            body["sha"] = sha
        if branch:
            body["branch"] = branch
        return self._json(self._call("PUT", f"/contents/{_file_path(path)}", json=body))

    # -- pull requests and comments --

    def create_pull(
        self, head: str, base: str, title: str, body: str | None = None, draft: bool = False
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"head": head, "base": base, "title": title, "draft": draft}
        if body is not None:
            payload["body"] = body
        return self._json(self._call("POST", "/pulls", json=payload))

    def create_issue_comment(self, number: int, body: str) -> dict[str, Any]:
        return self._json(self._call("POST", f"/issues/{int(number)}/comments", json={"body": body}))

    def list_issue_comments(self, number: int) -> list[dict[str, Any]]:
        """Every comment of an issue or pull request, oldest first, read page by page (by number,
        as :meth:`iter_workflow_runs` does) up to a page with fewer than asked for.

        :raises ProviderError: when a page cannot be read (not a list of comments) or repeats the
            one before it (its ``page`` dropped on the way: every page would be the first), or
            there are more than :data:`COMMENT_PAGES` pages: comments are never left out unsaid.
        """
        path = f"/issues/{int(number)}/comments"
        comments: list[dict[str, Any]] = []
        previous: list[Any] | None = None
        for page in range(1, COMMENT_PAGES + 1):
            resp = self._call("GET", path, params={"per_page": COMMENTS_PER_PAGE, "page": page})
            body = self._json(resp)
            if not isinstance(body, list) or not all(isinstance(c, dict) for c in body):
                raise ProviderError(
                    f"github: page {page} of the comments of #{number} in {self.full_name} could not be "
                    "read (not a list of comments)",
                    provider="github",
                )
            ids = [c.get("id") for c in body]
            if body and ids == previous:
                raise ProviderError(
                    f"github: page {page} of the comments of #{number} in {self.full_name} repeats page "
                    f"{page - 1} (is the page parameter dropped on the way?): the comments past it were "
                    "not read",
                    provider="github",
                )
            comments.extend(body)
            if len(body) < COMMENTS_PER_PAGE:
                return comments
            previous = ids
        raise ProviderError(
            f"github: #{number} in {self.full_name} has more than {COMMENT_PAGES * COMMENTS_PER_PAGE} "
            "comments: not all were read",
            provider="github",
        )
