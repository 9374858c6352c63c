"""A small client for the Jira Cloud platform REST API v3.

Every call goes through the core's :class:`~aiimpl_core.http.HttpClient` (timeouts, retries with
backoff on 429/5xx honouring ``Retry-After``, remote errors raised as
:class:`~aiimpl_core.errors.ProviderError`). Only the operations the plugin needs are here, each
shaped as Jira's OpenAPI description says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from aiimpl_core.errors import NotFound, ProviderError
from aiimpl_core.http import HttpClient, path_segment

from . import __version__
from .config import JiraSettings

API = "/rest/api/3"

#: The issue fields the orchestrator reads: enough to dispatch without a call per issue.
ISSUE_FIELDS: tuple[str, ...] = (
    "summary",
    "description",
    "status",
    "project",
    "labels",
    "issuelinks",
    "updated",
)


def _key(issue_key: str) -> str:
    return path_segment(issue_key, provider="jira", what="issue key")


def _segment(value: object, what: str) -> str:
    """A project key, field id or context id (an operator's, or one Jira answered) as one segment of
    a path: ``..`` would name another resource (:func:`~aiimpl_core.http.path_segment`)."""
    return path_segment(value, provider="jira", what=what)


#: The status a comment refused for Jira's per-issue limit is raised with: one the core's outbox
#: counts as a refusal (``REFUSED_STATUSES``), so it gives the comment up after its few attempts for
#: a refusal instead of retrying it for hours while the issue's later comments wait. Jira's own 413
#: is no such status (the outbox would take it for a passing failure); the message keeps it.
COMMENT_LIMIT_STATUS = 422


def comment_limit_reached(key: str, exc: ProviderError) -> ProviderError:
    """The error for Jira's 413 to a new comment: the issue has reached the per-issue limit on
    comments (5,000 on Jira Cloud), so no comment can be added until some are deleted."""
    return ProviderError(
        f"Jira's per-issue comment limit is reached on {key} (HTTP 413: the issue holds as many comments "
        "as Jira allows, 5,000 on Jira Cloud): the comment was not posted; delete old comments of the "
        "issue in Jira, then send it again with `aiimpl outbox retry ID`",
        provider="jira",
        status=COMMENT_LIMIT_STATUS,
        detail=exc.detail,
    )


class JiraClient:
    """Jira REST v3 operations over one authenticated :class:`HttpClient`.

    :param settings: the connection (site URL and credentials).
    :param http: the core's HTTP client factory (``ProviderContext.http``).
    """

    def __init__(self, settings: JiraSettings, http: Callable[..., HttpClient]) -> None:
        if not settings.url:
            raise ProviderError("Jira not configured", provider="jira")
        self.http = http(
            settings.url,
            provider="jira",
            headers={"Authorization": settings.auth_header(), "Accept": "application/json"},
            user_agent=f"aiimpl-jira/{__version__}",
        )

    # -- search -------------------------------------------------------------------------------

    def search_page(
        self,
        jql: str,
        *,
        fields: Sequence[str] = ISSUE_FIELDS,
        max_results: int = 50,
        next_page_token: str | None = None,
        reconcile_issues: Sequence[int] = (),
    ) -> dict[str, Any]:
        """One page of ``POST /rest/api/3/search/jql`` (the current, token-paginated search).

        :param reconcile_issues: ids of issues the search must see as they are now (Jira's search
            index lags behind recent updates otherwise).
        """
        body: dict[str, Any] = {"jql": jql, "fields": list(fields), "maxResults": max_results}
        if next_page_token:
            body["nextPageToken"] = next_page_token
        if reconcile_issues:
            body["reconcileIssues"] = list(reconcile_issues)
        # A search changes nothing, so repeating it after a 5xx is safe.
        answer = self.http.json(self.http.post(f"{API}/search/jql", json=body, retry_unsafe=True))
        return _object(answer, f"POST {API}/search/jql")

    def search(
        self,
        jql: str,
        *,
        fields: Sequence[str] = ISSUE_FIELDS,
        max_results: int = 50,
        reconcile_issues: Sequence[int] = (),
    ) -> Iterator[dict[str, Any]]:
        """Every page of a search, one request each, up to the last (:func:`search_page_is_last`).

        :raises ProviderError: on a page that says more issues follow but gives no
            ``nextPageToken``, or one the search was already read from, before that page is
            yielded. Taken for the last, such a page lost every issue after it without a word (the
            poll took the listing for complete); read again, a token given back never ends.
        """
        token: str | None = None
        sent: set[str] = set()
        while True:
            page = self.search_page(
                jql, fields=fields, max_results=max_results, next_page_token=token,
                reconcile_issues=reconcile_issues,
            )
            if search_page_is_last(page):
                yield page
                return
            following = page.get("nextPageToken")
            if not isinstance(following, str) or not following:
                problem = "gives no nextPageToken to read them from"
            elif following in sent:  # (read from it again, the same pages would come back for ever)
                problem = "gives back a nextPageToken the search was already read from"
            else:
                yield page
                token = following
                sent.add(token)
                continue
            raise _broken_page(f"POST {API}/search/jql", f"the page says more issues follow but {problem}")

    # -- issues -------------------------------------------------------------------------------

    def get_issue(
        self, key: str, *, fields: Sequence[str] = ISSUE_FIELDS, expand: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"fields": ",".join(fields)}
        if expand:
            params["expand"] = expand
        try:
            answer = self.http.json(self.http.get(f"{API}/issue/{_key(key)}", params=params))
        except ProviderError as exc:
            if exc.status == 404:
                raise NotFound(f"Jira issue {key} not found") from None
            raise
        return _object(answer, f"GET {API}/issue/{_key(key)}")

    def comments(self, key: str, *, page_size: int = 100) -> list[dict[str, Any]]:
        """All comments of an issue, oldest first (``startAt`` pagination, :meth:`_comment_pages`)."""
        return [c for batch in self._comment_pages(key, "created", page_size, page_size) for c in batch]

    def comments_newest_first(
        self, key: str, *, first_page: int, page_size: int = 100
    ) -> Iterator[dict[str, Any]]:
        """The comments of an issue, newest first, each with its ``properties``, read a page at a
        time as the caller goes on (``first_page`` comments, then ``page_size`` at a time): per
        page, ``GET …/issue/{key}/comment?orderBy=-created`` for their ids (that operation expands
        only ``renderedBody``), then ``POST …/comment/list?expand=properties``. A comment added
        meanwhile moves the others down a place, so one may be read twice, never skipped.

        :raises ProviderError: on a broken page of the listing (:meth:`_comment_pages`), or when
            ``comment/list`` says more of the comments asked for follow (``isLast: false``), which
            that operation has no parameter to read: the comment looked for may be among them.
        """
        for batch in self._comment_pages(key, "-created", first_page, page_size):
            ids = [int(c["id"]) for c in batch if str(c.get("id") or "").isdigit()]
            if not ids:
                continue
            listed = _object(self.http.json(self.http.post(
                f"{API}/comment/list", params={"expand": "properties"}, json={"ids": ids},
                retry_unsafe=True,
            )), f"POST {API}/comment/list")
            if listed.get("isLast") is False:
                raise _broken_page(
                    f"POST {API}/comment/list",
                    f"the answer to {len(ids)} comment ids of {key} says more of them follow (isLast: "
                    "false), which this operation cannot be asked for",
                )
            by_id = {str(c.get("id")): c for c in listed.get("values") or []}
            yield from (by_id[str(i)] for i in ids if str(i) in by_id)

    def _comment_pages(
        self, key: str, order: str, first_page: int, page_size: int
    ) -> Iterator[list[dict[str, Any]]]:
        """The comments of an issue a page at a time (``GET …/issue/{key}/comment``, ``startAt``
        pagination in the order ``order``): ``first_page`` comments, then ``page_size`` at a time,
        up to the ``total`` the last page read says.

        :raises ProviderError: on a page that does not say how many comments there are (no
            ``total``), answers from another ``startAt`` than the one asked (a site that ignores it
            gives the first page again, and the comments after it were never read), or holds no
            comment while its ``total`` says more follow. Taken for the last, such a page lost the
            comments after it: context of the issue, or the copy a retry looks for.
        """
        path = f"{API}/issue/{_key(key)}/comment"
        start, size = 0, first_page
        while True:
            request = f"GET {path}?startAt={start}"
            page = _object(self.http.json(self.http.get(
                path, params={"startAt": start, "maxResults": size, "orderBy": order}
            )), request)
            _check_start(page, start, request)
            total = page.get("total")
            if not _is_count(total):
                raise _broken_page(request, "the page does not say how many comments there are (total)")
            batch = list(page.get("comments") or [])
            if not batch and start < total:
                raise _broken_page(
                    request, f"the page says there are {total} comments but holds none from startAt {start}"
                )
            yield batch
            start += len(batch)
            if start >= total:
                return
            size = page_size

    def add_comment(
        self, key: str, adf_body: dict[str, Any], *, properties: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """``POST /issue/{key}/comment``; ``properties`` (key → JSON value) are stored with the
        comment as its entity properties, in the same request.

        :raises ProviderError: status :data:`COMMENT_LIMIT_STATUS` when the issue holds as many
            comments as Jira allows (Jira's 413), which no retry changes.
        """
        body: dict[str, Any] = {"body": adf_body}
        if properties:
            body["properties"] = [{"key": k, "value": v} for k, v in properties.items()]
        try:
            resp = self.http.post(f"{API}/issue/{_key(key)}/comment", json=body, expected=(201,))
        except ProviderError as exc:
            if exc.status == 413:
                raise comment_limit_reached(key, exc) from exc
            raise
        return self.http.json(resp)

    def transitions(self, key: str, *, transition_id: str | None = None) -> list[dict[str, Any]]:
        """The transitions available to an issue, each with the fields of its screen
        (``expand=transitions.fields``); only the one with ``transition_id`` when given."""
        params = {"expand": "transitions.fields"}
        if transition_id is not None:
            params["transitionId"] = transition_id
        data = self.http.json(self.http.get(f"{API}/issue/{_key(key)}/transitions", params=params))
        return list(data.get("transitions") or [])

    def transition(self, key: str, transition_id: str, *, fields: Mapping[str, Any] | None = None) -> None:
        """``POST /issue/{key}/transitions``; ``fields`` sets fields of the transition's screen."""
        body: dict[str, Any] = {"transition": {"id": transition_id}}
        if fields:
            body["fields"] = dict(fields)
        self.http.post(f"{API}/issue/{_key(key)}/transitions", json=body, expected=(204,))

    # -- configuration endpoints ----------------------------------------------------------------

    def myself(self) -> dict[str, Any]:
        """The account the credentials belong to (``GET /rest/api/3/myself``)."""
        return dict(self.http.json(self.http.get(f"{API}/myself")))

    def project_statuses(self, project: str) -> list[dict[str, Any]]:
        """Each issue type of a project with the statuses its workflow has."""
        try:
            path = f"{API}/project/{_segment(project, 'project key')}/statuses"
            return list(self.http.json(self.http.get(path)))
        except ProviderError as exc:
            if exc.status == 404:
                raise NotFound(f"Jira project {project} not found") from None
            raise

    def parse_jql(self, queries: Sequence[str]) -> list[dict[str, Any]]:
        """``POST /rest/api/3/jql/parse?validation=strict``: one parsed entry (with ``errors``) per query."""
        resp = self.http.post(
            f"{API}/jql/parse",
            params={"validation": "strict"},
            json={"queries": list(queries)},
            retry_unsafe=True,
        )
        return list(self.http.json(resp).get("queries") or [])

    def fields(self) -> list[dict[str, Any]]:
        return list(self.http.json(self.http.get(f"{API}/field")))

    def field_contexts(self, field_id: str) -> list[dict[str, Any]]:
        return self._paged(f"{API}/field/{_segment(field_id, 'field id')}/context", page_size=50)

    def context_options(self, field_id: str, context_id: str) -> list[dict[str, Any]]:
        return self._paged(
            f"{API}/field/{_segment(field_id, 'field id')}/context/{_segment(context_id, 'field context id')}"
            "/option",
            page_size=100,
        )

    def _paged(self, path: str, *, page_size: int) -> list[dict[str, Any]]:
        """Every ``values`` of a ``PageBean`` listing (``startAt`` pagination): up to the page whose
        ``isLast`` is true, or (a page without ``isLast``) that reaches its ``total``.

        :raises ProviderError: on a page that says more follow but holds none, answers from another
            ``startAt`` than the one asked, or says neither ``isLast`` nor ``total``. Taken for the
            last, such a page lost the options or contexts after it without a word.
        """
        out: list[dict[str, Any]] = []
        start = 0
        while True:
            request = f"GET {path}?startAt={start}"
            answer = self.http.json(self.http.get(path, params={"startAt": start, "maxResults": page_size}))
            page = _object(answer, request)
            _check_start(page, start, request)
            values = list(page.get("values") or [])
            last = page.get("isLast")
            if not isinstance(last, bool):
                total = page.get("total")
                if not _is_count(total):
                    raise _broken_page(
                        request,
                        "the page says neither whether more follow (isLast) nor how many there are (total)",
                    )
                last = start + len(values) >= total
            if not last and not values:
                raise _broken_page(request, f"the page says more follow but holds none from startAt {start}")
            out.extend(values)
            start += len(values)
            if last:
                return out


def search_page_is_last(page: Mapping[str, Any]) -> bool:
    """Whether a page of ``search/jql`` is the last: what its ``isLast`` says, else (an answer
    without it) whether it gives no ``nextPageToken``. A page that says it is the last ends the
    search even with a token: Jira documents the token as absent on the last page."""
    last = page.get("isLast")
    return last if isinstance(last, bool) else not page.get("nextPageToken")


def _broken_page(request: str, problem: str) -> ProviderError:
    """The failed read of a page that breaks its pagination: ``jira: <request> failed: <problem>``.

    It has no ``status``, as a timeout has none: each read treats it as it treats its other
    failures (a listing fails, reading one issue raises, a comment's try fails and is tried again).
    """
    return ProviderError(f"jira: {request} failed: {problem}", provider="jira")


#: how an answer that is not the JSON object asked for is named
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def _object(answer: Any, request: str) -> dict[str, Any]:
    """``answer`` when it is a JSON object, as every paginated read and an issue are: anything else
    (a proxy's array, ``null``) is that read's failure, said as such, not an ``AttributeError``
    further on that a poll cycle could only report as a plugin's bug."""
    if isinstance(answer, dict):
        return answer
    kind = "null" if answer is None else _JSON_KINDS.get(type(answer), "no object")
    raise _broken_page(request, f"the answer is {kind}, not a JSON object")


def _check_start(page: Mapping[str, Any], start: int, request: str) -> None:
    """Refuse a page of ``startAt`` pagination that answers from another index than ``start``."""
    answered = page.get("startAt")
    if _is_count(answered) and answered != start:
        raise _broken_page(request, f"the page answers from startAt {answered}, not the {start} asked")


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
