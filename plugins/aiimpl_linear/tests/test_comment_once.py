"""``post_comment_once``: a queued comment is created with its ``ref`` as its Linear id, so a try
whose answer was lost after Linear stored the comment is found again instead of posted twice."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from aiimpl_core.errors import NotFound, ProviderError
from aiimpl_core.extensions import db
from aiimpl_core.orm import OutboxItem, utcnow
from aiimpl_core.services import outbox
from aiimpl_core.testing.contract import make_context

from aiimpl_linear.provider import LinearProvider
from aiimpl_linear.testing import FakeLinear


def _ref() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def key(fake: FakeLinear, provider: LinearProvider) -> str:
    """An issue whose id the provider has read already (as a poll does), so requests count only
    the comment's."""
    key = fake.add_issue("ENG", "Commented on")["identifier"]
    provider.get_issue(key)
    fake.requests.clear()
    return key


def test_a_first_try_is_one_request_creating_the_comment_under_its_ref(
    fake: FakeLinear, provider: LinearProvider, key: str
) -> None:
    ref = _ref()
    comment = provider.post_comment_once(key, "**done**", ref=ref, retry=False)
    assert comment.id == ref and comment.body == "**done**" and comment.created_at
    assert fake.operations() == ["CreateComment"]
    assert fake.requests[0].variables == {"issueId": fake.issue(key)["id"], "body": "**done**", "id": ref}
    assert fake.comments_of(key) == ["**done**"]


@pytest.mark.parametrize("lost", ["502", "timeout"])
def test_a_lost_answer_then_the_retry_leaves_one_comment(fake: FakeLinear, lost: str) -> None:
    # a short timeout only where the answer is held past it (a 502 may come late on a loaded
    # machine), and only for the first try: the retry, as a later cycle's in this process or
    # another, waits as long as the default (on a busy machine its answer may take over 1 s)
    short = {"AIIMPL_LINEAR_TIMEOUT": "1"} if lost == "timeout" else {}
    provider = LinearProvider(make_context({**fake.config(), **short}))
    retrying = LinearProvider(make_context(fake.config()))
    key = fake.add_issue("ENG", "Commented on")["identifier"]
    provider.get_issue(key)
    retrying.get_issue(key)
    ref = _ref()
    # Linear stores the comment; its answer never reaches us (a proxy's 502, or too late)
    fake.lose_answer("CreateComment", **({"status": 502} if lost == "502" else {"delay": 1.6}))
    with pytest.raises(ProviderError) as first:
        provider.post_comment_once(key, "Outcome", ref=ref, retry=False)
    assert first.value.status == (502 if lost == "502" else None)
    assert fake.comments_of(key) == ["Outcome"]
    fake.requests.clear()

    comment = retrying.post_comment_once(key, "Outcome", ref=ref, retry=True)

    assert comment.id == ref and comment.body == "Outcome"
    assert fake.comments_of(key) == ["Outcome"]  # once
    assert fake.operations() == ["CommentById"]  # found: nothing created


def test_a_retry_when_the_first_try_never_reached_linear_posts_the_comment(
    fake: FakeLinear, provider: LinearProvider, key: str
) -> None:
    ref = _ref()
    fake.fail("CreateComment", "Bad gateway", status=502)  # a proxy's answer; Linear saw nothing
    with pytest.raises(ProviderError):
        provider.post_comment_once(key, "Outcome", ref=ref, retry=False)
    assert fake.comments_of(key) == []
    fake.requests.clear()

    comment = provider.post_comment_once(key, "Outcome", ref=ref, retry=True)

    assert comment.id == ref
    assert fake.comments_of(key) == ["Outcome"]
    assert fake.operations() == ["CommentById", "CreateComment"]


def test_a_first_try_refused_as_taken_returns_the_comment_an_unseen_try_posted(
    fake: FakeLinear, provider: LinearProvider, key: str
) -> None:
    # a sender that died after Linear's answer did not count its try: this one is not a retry
    ref = _ref()
    fake.add_comment(key, "Outcome", comment_id=ref)
    comment = provider.post_comment_once(key, "Outcome", ref=ref, retry=False)
    assert comment.id == ref
    assert fake.comments_of(key) == ["Outcome"]
    assert fake.operations() == ["CreateComment", "CommentById"]


def test_a_retry_that_races_the_lost_try_returns_its_comment(
    fake: FakeLinear, provider: LinearProvider, key: str
) -> None:
    # the lost try is still in flight when the retry looks, and lands before the retry's create
    ref = _ref()
    fake.before("CreateComment", lambda: fake.add_comment(key, "Outcome", comment_id=ref))
    comment = provider.post_comment_once(key, "Outcome", ref=ref, retry=True)
    assert comment.id == ref
    assert fake.comments_of(key) == ["Outcome"]
    assert fake.operations() == ["CommentById", "CreateComment", "CommentById"]


@pytest.mark.parametrize("retry", [False, True])
def test_a_comment_of_another_issue_is_not_taken_for_this_one(
    fake: FakeLinear, provider: LinearProvider, key: str, retry: bool
) -> None:
    other = fake.add_issue("ENG", "Another issue")["identifier"]
    ref = _ref()
    fake.add_comment(other, "Theirs", comment_id=ref)
    with pytest.raises(ProviderError, match=f"{ref} for {key} is taken by a comment of another issue"):
        provider.post_comment_once(key, "Ours", ref=ref, retry=retry)
    assert fake.comments_of(key) == []
    assert fake.comments_of(other) == ["Theirs"]


def test_another_refusal_of_the_create_is_raised_after_one_look(
    fake: FakeLinear, provider: LinearProvider, key: str
) -> None:
    fake.fail("CreateComment", "Comment body is too long", code="INVALID_INPUT")
    with pytest.raises(ProviderError, match="Comment body is too long"):
        provider.post_comment_once(key, "x" * 10, ref=_ref(), retry=False)
    assert fake.comments_of(key) == []
    assert fake.operations() == ["CreateComment", "CommentById"]


def test_refused_credentials_are_raised_without_a_look(
    fake: FakeLinear, provider: LinearProvider, key: str
) -> None:
    fake.fail("CreateComment", "Authentication required", code="AUTHENTICATION_ERROR", status=400)
    with pytest.raises(ProviderError) as err:
        provider.post_comment_once(key, "Outcome", ref=_ref(), retry=False)
    assert err.value.status == 401
    assert fake.operations() == ["CreateComment"]


def test_a_comment_on_a_deleted_issue_is_not_found(fake: FakeLinear, provider: LinearProvider) -> None:
    with pytest.raises(NotFound):
        provider.post_comment_once("ENG-999", "Outcome", ref=_ref(), retry=True)


def test_post_comment_lets_linear_choose_the_id(fake: FakeLinear, provider: LinearProvider, key: str) -> None:
    comment = provider.post_comment(key, "plain")
    assert comment.id and fake.requests[-1].variables == {"issueId": fake.issue(key)["id"], "body": "plain"}


# -- through the outbox -------------------------------------------------------------------------


def test_outbox_comment_whose_answer_was_lost_is_posted_once(app, fake: FakeLinear) -> None:
    key = fake.add_issue("ENG", "Commented on")["identifier"]
    now = utcnow()
    item = OutboxItem(dedupe_key=f"test:{key}:outcome", op="comment", provider="linear", issue_key=key,
                      kind="outcome", body="⚠️ Implementation failed", state="pending", attempts=0,
                      next_attempt_at=now, created_at=now)
    db.session.add(item)
    db.session.commit()
    ref = outbox.comment_ref(item.id)
    fake.lose_answer("CreateComment", status=502)

    assert outbox.deliver(issue_keys=[key], now=now)["failed"] == 1
    assert fake.comments_of(key) == ["⚠️ Implementation failed"]  # stored, though the try failed
    db.session.expire_all()
    assert (item.state, item.attempts) == ("pending", 1)

    assert outbox.deliver(issue_keys=[key], now=now + timedelta(hours=1))["sent"] == 1

    db.session.expire_all()
    assert (item.state, item.remote_id) == ("done", ref)
    assert fake.comments_of(key) == ["⚠️ Implementation failed"]  # once
    assert [c["id"] for c in fake.store.comments.values()] == [ref]
