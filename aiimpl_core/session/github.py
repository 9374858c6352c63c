"""The session's GitHub REST calls: opening the pull request (or finding the one already open for
the branch), finding the merged or closed one a branch was left behind by, and where repositories
live."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..errors import ProviderError
from ..http import HttpClient

API_VERSION = "2022-11-28"
#: GitHub refuses a longer pull request title: 422 "title is too long (maximum is 256 characters)"
MAX_TITLE_CHARS = 256


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


def _client(api_url: str, token: str) -> HttpClient:
    return HttpClient(
        api_url,
        provider="github",
        timeout=30.0,
        headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {token}",
            "X-GitHub-Api-Version": API_VERSION,
        },
    )


def open_pull_request(
    api_url: str, token: str, owner: str, repo: str, *, title: str, body: str, head: str, base: str
) -> dict[str, Any]:
    """``POST /repos/{owner}/{repo}/pulls``; the created pull request.

    :raises PullRequestError: with GitHub's status and message.
    """
    if len(title) > MAX_TITLE_CHARS:  # a Jira summary alone may be 255 characters
        title = title[: MAX_TITLE_CHARS - 1].rstrip() + "…"
    client = _client(api_url, token)
    try:
        resp = client.post(
            f"/repos/{owner}/{repo}/pulls", json={"title": title, "head": head, "base": base, "body": body}
        )
        data = client.json(resp)  # not JSON: no status, as no answer (GitHub may have created it)
    except ProviderError as exc:
        raise PullRequestError(exc.status, _message(exc)) from None
    if not isinstance(data, dict) or not isinstance(data.get("number"), int):
        raise PullRequestError(resp.status_code, "GitHub answered without a pull request")
    return data


def find_open_pull_request(
    api_url: str, token: str, owner: str, repo: str, *, head: str, base: str
) -> dict[str, Any] | None:
    """The open pull request from branch ``head`` of ``owner/repo`` into ``base``, or ``None``.

    ``GET /repos/{owner}/{repo}/pulls?head={owner}:{head}&base={base}&state=open``. GitHub keeps at
    most one open pull request per head and base; closed and merged ones never count, and the
    answer is checked again here rather than trusted to the filters.

    :raises PullRequestError: when GitHub refuses the listing or cannot be reached.
    """
    for pr in _pull_requests(api_url, token, owner, repo, head=head, base=base, state="open"):
        if _is_open_pull(pr, f"{owner}/{repo}", head, base):
            return pr
    return None


def find_ended_pull_request(
    api_url: str, token: str, owner: str, repo: str, *, head: str, base: str, sha: str
) -> dict[str, Any] | None:
    """The pull request from branch ``head`` of ``owner/repo`` into ``base`` that was merged, or
    else closed without a merge, with the branch at commit ``sha`` (the branch as it stands), or
    ``None``. A merged one comes first, then the newest closed one.

    ``GET /repos/{owner}/{repo}/pulls?head={owner}:{head}&base={base}&state=closed``, the newest
    first (a branch's pull requests are few; the first hundred are read). A closed pull request
    keeps the head commit it was merged or closed with, whatever the branch got later.

    :raises PullRequestError: when GitHub refuses the listing or cannot be reached.
    """
    listed = _pull_requests(api_url, token, owner, repo, head=head, base=base, state="closed")
    ended = [pr for pr in listed if pr.get("state") == "closed" and _head_sha(pr) == sha
             and _is_from(pr, f"{owner}/{repo}", head, base)]
    return next((pr for pr in ended if pr.get("merged_at")), ended[0] if ended else None)


def _head_sha(pr: dict[str, Any]) -> Any:
    pr_head = pr.get("head") if isinstance(pr.get("head"), dict) else {}
    return pr_head.get("sha")


def _pull_requests(
    api_url: str, token: str, owner: str, repo: str, *, head: str, base: str, state: str
) -> list[dict[str, Any]]:
    """``GET /repos/{owner}/{repo}/pulls?head={owner}:{head}&base={base}&state={state}``: the first
    hundred, those that are objects.

    :raises PullRequestError: when GitHub refuses the listing or cannot be reached.
    """
    client = _client(api_url, token)
    try:
        resp = client.get(
            f"/repos/{owner}/{repo}/pulls",
            params={"head": f"{owner}:{head}", "base": base, "state": state, "per_page": 100},
        )
        data = client.json(resp)
    except ProviderError as exc:
        raise PullRequestError(exc.status, _message(exc)) from None
    if not isinstance(data, list):
        raise PullRequestError(resp.status_code, "GitHub answered without a list of pull requests")
    return [pr for pr in data if isinstance(pr, dict)]


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
