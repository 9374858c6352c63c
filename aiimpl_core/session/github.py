"""The session's GitHub REST calls: opening the pull request (or finding the one already open for
the branch), finding the merged or closed one a branch was left behind by, and where repositories
live.

Each call is bounded by the session's budget and its stop (:class:`Budget`), as the commands the
session runs are: a GitHub that hangs must not hold a stopped session past the time it has left to
save the work and report.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ..errors import ProviderError
from ..http import HttpClient, path_segment

API_VERSION = "2022-11-28"
#: GitHub refuses a longer pull request title: 422 "title is too long (maximum is 256 characters)"
MAX_TITLE_CHARS = 256
#: seconds one try of a call may wait for GitHub's answer
TIMEOUT = 30.0
#: seconds a call under way when the budget runs out or the session is stopped still gets for its
#: answer: a pull request GitHub has created and answers a moment later is kept, a GitHub that
#: hangs is given up (well within the time kept back to save the work and report)
ANSWER_GRACE = 5.0

#: pull requests one listing asks for (GitHub's most)
PER_PAGE = 100

T = TypeVar("T")


class PullRequestError(Exception):
    """GitHub refused the pull request; ``str()`` is the reference's failure wording."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        if self.status is None:
            return f"PR creation failed: {self.message}"
        return f"PR creation failed with HTTP {self.status}: {self.message}"


class Interrupted(Exception):
    """A call not made, or given up before GitHub answered, because the budget ran out
    (``stopped`` is ``"deadline"``) or the runner stopped the session (``"signal"``), as a
    command's ``ProcessResult.stopped`` says. A call given up may have been done all the same."""

    def __init__(self, stopped: str) -> None:
        super().__init__(stopped)
        self.stopped = stopped


@dataclass(frozen=True)
class Budget:
    """What bounds the calls: none starts (nor is tried again) once ``stop`` is set or
    ``deadline`` (a ``time.monotonic()`` value) has passed, and one under way then is given up
    :data:`ANSWER_GRACE` seconds later."""

    deadline: float | None = None
    stop: threading.Event | None = None
    grace: float = ANSWER_GRACE

    def interrupted(self) -> str | None:
        """``"signal"`` once the session was stopped, ``"deadline"`` once the budget ran out."""
        if self.stop is not None and self.stop.is_set():
            return "signal"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "deadline"
        return None

    def timeout(self) -> float:
        """Seconds one try may wait for an answer: :data:`TIMEOUT`, less near the deadline."""
        if self.deadline is None:
            return TIMEOUT
        return max(1.0, min(TIMEOUT, self.deadline + self.grace - time.monotonic()))

    def sleep(self, seconds: float) -> None:
        """The client's wait before trying again: a stop ends it, and no try follows a stop or
        the budget's end."""
        if self.stop is not None:
            self.stop.wait(seconds)
        else:
            time.sleep(seconds)
        stopped = self.interrupted()
        if stopped:
            raise Interrupted(stopped)

    def run(self, call: Callable[[], T]) -> T:
        """``call()``'s value (or its exception), unless the budget ends first.

        The call runs in a thread of its own, so that a stop is not held up by an answer that
        never comes (a stop signal does not end a socket's wait; the thread, a daemon, is left to
        its try's timeout).

        :raises Interrupted: before the call, when the budget has ended already; or
            :attr:`grace` seconds after it ended while the call was under way.
        """
        stopped = self.interrupted()
        if stopped:
            raise Interrupted(stopped)
        if self.deadline is None and self.stop is None:
            return call()
        outcome: list[tuple[bool, Any]] = []
        done = threading.Event()

        def work() -> None:
            try:
                outcome.append((True, call()))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                outcome.append((False, exc))
            finally:
                done.set()

        threading.Thread(target=work, name="github-call", daemon=True).start()
        give_up_at: float | None = None
        while not done.wait(0.1):
            if give_up_at is None:
                stopped = self.interrupted()
                if stopped:
                    give_up_at = time.monotonic() + self.grace
            elif time.monotonic() >= give_up_at:
                assert stopped is not None
                raise Interrupted(stopped)
        ok, value = outcome[0]
        if ok:
            return value  # type: ignore[no-any-return]
        raise value


def web_base(api_url: str) -> str:
    """``https://api.github.com`` → ``https://github.com``; GitHub Enterprise's
    ``https://host/api/v3`` → ``https://host``; anything else: its scheme and host."""
    parts = urlsplit(api_url.rstrip("/"))
    host = parts.netloc
    if host == "api.github.com":
        host = "github.com"
    return f"{parts.scheme or 'https'}://{host}"


def _message(exc: ProviderError) -> str:
    detail = exc.detail
    if isinstance(detail, dict):
        text = str(detail.get("message") or "")
        extra = []
        for err in detail.get("errors") or []:
            if isinstance(err, dict):
                extra.append(
                    str(
                        err.get("message")
                        or " ".join(str(err[k]) for k in ("resource", "field", "code") if err.get(k))
                    )
                )
            else:
                extra.append(str(err))
        if extra:
            text = f"{text} ({'; '.join(extra)})" if text else "; ".join(extra)
        if text:
            return text
    return exc.message.split(": ", 2)[-1]


#: the longest wait GitHub's rate limit asks for that a call waits out (its secondary rate limit
#: asks for a minute or so), the budget's end and a stop cutting it short
LONGEST_RATE_LIMIT_WAIT = 90.0


def _client(api_url: str, token: str, budget: Budget) -> HttpClient:
    return HttpClient(
        api_url,
        provider="github",
        timeout=budget.timeout(),
        sleep=budget.sleep,
        max_wait=LONGEST_RATE_LIMIT_WAIT,
        headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {token}",
            "X-GitHub-Api-Version": API_VERSION,
        },
    )


def open_pull_request(
    api_url: str, token: str, owner: str, repo: str, *, title: str, body: str, head: str, base: str,
    budget: Budget | None = None,
) -> dict[str, Any]:
    """``POST /repos/{owner}/{repo}/pulls``; the created pull request.

    :param budget: what bounds the call (none: only its timeout).
    :raises PullRequestError: with GitHub's status and message.
    :raises Interrupted: the budget ended before the call, or before its answer.
    """
    budget = budget or Budget()
    return budget.run(lambda: _open(api_url, token, owner, repo, title=title, body=body, head=head,
                                    base=base, budget=budget))


def _pulls_path(owner: str, repo: str) -> str:
    """``/repos/{owner}/{repo}/pulls``, each name one segment (``..`` refused: a pull request is
    never opened or looked for elsewhere)."""
    owner = path_segment(owner, provider="github", what="owner")
    return f"/repos/{owner}/{path_segment(repo, provider='github', what='repository name')}/pulls"


def _open(
    api_url: str, token: str, owner: str, repo: str, *, title: str, body: str, head: str, base: str,
    budget: Budget,
) -> dict[str, Any]:
    if len(title) > MAX_TITLE_CHARS:  # a Jira summary alone may be 255 characters
        title = title[: MAX_TITLE_CHARS - 1].rstrip() + "…"
    client = _client(api_url, token, budget)
    try:
        resp = client.post(
            _pulls_path(owner, repo), json={"title": title, "head": head, "base": base, "body": body}
        )
        data = client.json(resp)  # not JSON: no status, as no answer (GitHub may have created it)
    except ProviderError as exc:
        raise PullRequestError(exc.status, _message(exc)) from None
    # a pull request without its number or link is none the session can report (the orchestrator
    # refuses a success without its link): looked up instead, as one not answered
    if not _readable(data):
        raise PullRequestError(resp.status_code, "GitHub answered without a pull request")
    return data


def _readable(pr: Any) -> bool:
    """Whether ``pr`` is a pull request as GitHub answers one: an object with its number, its link
    and its head and base."""
    return (
        isinstance(pr, dict)
        and isinstance(pr.get("number"), int)
        and not isinstance(pr.get("number"), bool)
        and isinstance(pr.get("html_url"), str)
        and bool(pr["html_url"])
        and isinstance(pr.get("head"), dict)
        and isinstance(pr.get("base"), dict)
    )


def find_open_pull_request(
    api_url: str, token: str, owner: str, repo: str, *, head: str, base: str, budget: Budget | None = None
) -> dict[str, Any] | None:
    """The open pull request from branch ``head`` of ``owner/repo`` into ``base``, or ``None``.

    ``GET /repos/{owner}/{repo}/pulls?head={owner}:{head}&base={base}&state=open``. GitHub keeps at
    most one open pull request per head and base; closed and merged ones never count, and the
    answer is checked again here rather than trusted to the filters.

    :raises PullRequestError: when GitHub refuses the listing or cannot be reached.
    :raises Interrupted: the budget ended before the call, or before its answer.
    """
    listed, whole, status = _pull_requests(api_url, token, owner, repo, head=head, base=base, state="open",
                                           budget=budget)
    for pr in listed:
        if _is_open_pull(pr, f"{owner}/{repo}", head, base):
            return pr
    if not whole:
        # none among those read is no answer: the one open may be among the rest (a branch started
        # over for a pull request closed would then replace the work of the one open)
        raise PullRequestError(status, "GitHub answered a list of pull requests not read whole")
    return None


def find_ended_pull_request(
    api_url: str, token: str, owner: str, repo: str, *, head: str, base: str, sha: str,
    budget: Budget | None = None,
) -> dict[str, Any] | None:
    """The pull request from branch ``head`` of ``owner/repo`` into ``base`` that was merged, or
    else closed without a merge, with the branch at commit ``sha`` (the branch as it stands), or
    ``None``. A merged one comes first, then the newest closed one.

    ``GET /repos/{owner}/{repo}/pulls?head={owner}:{head}&base={base}&state=closed``, the newest
    first (a branch's pull requests are few; the first hundred are read). A closed pull request
    keeps the head commit it was merged or closed with, whatever the branch got later.

    :raises PullRequestError: when GitHub refuses the listing or cannot be reached.
    :raises Interrupted: the budget ended before the call, or before its answer.
    """
    # none found among those read is the answer "none" (the branch continued) whether or not more
    # were left unread: what "GitHub cannot say" leads to as well
    listed, _whole, _status = _pull_requests(api_url, token, owner, repo, head=head, base=base,
                                             state="closed", budget=budget)
    ended = [pr for pr in listed if pr.get("state") == "closed" and _head_sha(pr) == sha
             and _is_from(pr, f"{owner}/{repo}", head, base)]
    return next((pr for pr in ended if pr.get("merged_at")), ended[0] if ended else None)


def _head_sha(pr: dict[str, Any]) -> Any:
    pr_head = pr.get("head") if isinstance(pr.get("head"), dict) else {}
    return pr_head.get("sha")


def _pull_requests(
    api_url: str, token: str, owner: str, repo: str, *, head: str, base: str, state: str,
    budget: Budget | None,
) -> tuple[list[dict[str, Any]], bool, int]:
    """``GET /repos/{owner}/{repo}/pulls?head={owner}:{head}&base={base}&state={state}``: the first
    hundred, those that are pull requests as GitHub answers them (:func:`_readable`); whether they
    are all GitHub has (none left out as unreadable, no page after this one); the answer's status.

    :raises PullRequestError: when GitHub refuses the listing or cannot be reached.
    :raises Interrupted: the budget ended before the call, or before its answer.
    """
    budget = budget or Budget()
    return budget.run(lambda: _list(api_url, token, owner, repo, head=head, base=base, state=state,
                                    budget=budget))


def _list(
    api_url: str, token: str, owner: str, repo: str, *, head: str, base: str, state: str, budget: Budget
) -> tuple[list[dict[str, Any]], bool, int]:
    client = _client(api_url, token, budget)
    try:
        resp = client.get(
            _pulls_path(owner, repo),
            params={"head": f"{owner}:{head}", "base": base, "state": state, "per_page": PER_PAGE},
        )
        data = client.json(resp)
    except ProviderError as exc:
        raise PullRequestError(exc.status, _message(exc)) from None
    if not isinstance(data, list):
        raise PullRequestError(resp.status_code, "GitHub answered without a list of pull requests")
    listed = [pr for pr in data if _readable(pr)]
    whole = len(listed) == len(data) and len(data) < PER_PAGE and "next" not in resp.links
    return listed, whole, resp.status_code


def _is_from(pr: dict[str, Any], full_name: str, head: str, base: str) -> bool:
    """Whether ``pr`` is from ``head`` of ``full_name`` itself (not a fork that has a branch of the
    same name) into ``base``."""
    pr_head = pr.get("head") if isinstance(pr.get("head"), dict) else {}
    pr_base = pr.get("base") if isinstance(pr.get("base"), dict) else {}
    head_repo = pr_head.get("repo") if isinstance(pr_head.get("repo"), dict) else {}
    return (
        isinstance(pr.get("number"), int)
        and pr_head.get("ref") == head
        and str(head_repo.get("full_name") or "").lower() == full_name.lower()
        and pr_base.get("ref") == base
    )


def _is_open_pull(pr: dict[str, Any], full_name: str, head: str, base: str) -> bool:
    """Whether ``pr`` is open, not merged, from ``head`` of ``full_name`` itself (not a fork that
    has a branch of the same name) and into ``base``."""
    return pr.get("state") == "open" and not pr.get("merged_at") and _is_from(pr, full_name, head, base)
