"""A queued comment appears once on Jira however often it is tried (``post_comment_once``).

Each comment the outbox posts carries the comment property ``aiimpl.comment`` with its identity;
a retry looks for it among the issue's newest comments before posting, so a try whose answer was
lost after Jira stored the comment (a dropped connection, a proxy's 502) leaves no second copy.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from aiimpl_core.errors import ProviderError
from aiimpl_core.extensions import db
from aiimpl_core.orm import OutboxItem, utcnow
from aiimpl_core.services import outbox
from aiimpl_core.services.jobs import enqueue_comment
from aiimpl_core.testing.contract import make_context

from aiimpl_jira.adf import adf_text
from aiimpl_jira.provider import REF_PROPERTY, JiraProvider
from aiimpl_jira.testing.fake_jira import FakeJira

REF = str(uuid.UUID(int=0x1234, version=4))


def _texts(jira: FakeJira, key: str) -> list[str]:
    return [adf_text(doc) for doc in jira.comment_docs(key)]


def test_a_first_try_is_one_request_that_tags_the_comment(jira: FakeJira, provider: JiraProvider) -> None:
    jira.add_issue("ENG-1")
    comment = provider.post_comment_once("ENG-1", "🚀 Session started", ref=REF, retry=False)

    [stored] = jira.issues["ENG-1"].comments
    assert comment.id == stored.id and comment.body == "🚀 Session started"
    assert stored.properties == {REF_PROPERTY: {"ref": REF}}
    assert [(r.method, r.path) for r in jira.requests] == [("POST", "/rest/api/3/issue/ENG-1/comment")]


@pytest.mark.parametrize("lost", [None, 502], ids=["connection-dropped", "proxy-502"])
def test_a_retry_finds_the_comment_a_lost_answer_stored(
    jira: FakeJira, provider: JiraProvider, lost: int | None
) -> None:
    jira.add_issue("ENG-1")
    jira.lose_next_answer("POST", "/issue/ENG-1/comment", status=lost)
    with pytest.raises(ProviderError) as failed:
        provider.post_comment_once("ENG-1", "⚠️ Implementation failed", ref=REF, retry=False)
    assert failed.value.status == lost
    assert _texts(jira, "ENG-1") == ["⚠️ Implementation failed"]  # stored all the same

    comment = provider.post_comment_once("ENG-1", "⚠️ Implementation failed", ref=REF, retry=True)

    assert _texts(jira, "ENG-1") == ["⚠️ Implementation failed"]
    assert comment.id == jira.issues["ENG-1"].comments[0].id
    # the newest comments' ids, then those comments with their properties (the issue's comment
    # listing expands only renderedBody)
    [lookup] = jira.requests_to("GET", "/issue/ENG-1/comment")
    assert lookup.query == {"startAt": ["0"], "maxResults": ["50"], "orderBy": ["-created"]}
    [listed] = jira.requests_to("POST", "/comment/list")
    assert listed.query == {"expand": ["properties"]}
    assert len(jira.requests_to("POST", "/issue/ENG-1/comment")) == 1


def test_a_retry_posts_when_the_first_try_never_reached_jira(jira: FakeJira, provider: JiraProvider) -> None:
    jira.add_issue("ENG-1")
    jira.fail_next("POST", "/issue/ENG-1/comment", 503)
    with pytest.raises(ProviderError):
        provider.post_comment_once("ENG-1", "📝 PR opened", ref=REF, retry=False)
    assert jira.issues["ENG-1"].comments == []

    comment = provider.post_comment_once("ENG-1", "📝 PR opened", ref=REF, retry=True)

    [stored] = jira.issues["ENG-1"].comments
    assert _texts(jira, "ENG-1") == ["📝 PR opened"] and comment.id == stored.id
    assert stored.properties == {REF_PROPERTY: {"ref": REF}}


def test_a_retry_takes_no_comment_of_another_ref(jira: FakeJira, provider: JiraProvider) -> None:
    jira.add_issue("ENG-1")
    jira.add_issue("ENG-2")
    other = str(uuid.UUID(int=0x5678, version=4))
    provider.post_comment_once("ENG-1", "an earlier comment", ref=other, retry=False)
    jira.add_comment("ENG-1", "a person's comment", properties={"other.app": {"ref": REF}})
    provider.post_comment_once("ENG-2", "the same ref on another issue", ref=REF, retry=False)

    comment = provider.post_comment_once("ENG-1", "this comment", ref=REF, retry=True)

    assert _texts(jira, "ENG-1") == ["an earlier comment", "a person's comment", "this comment"]
    assert comment.id == jira.issues["ENG-1"].comments[-1].id


def test_a_retry_reads_one_page_when_the_copy_is_among_the_newest(
    jira: FakeJira, provider: JiraProvider
) -> None:
    jira.add_issue("ENG-1")
    provider.post_comment_once("ENG-1", "lost answer", ref=REF, retry=False)
    for n in range(JiraProvider.retry_lookback - 1):
        jira.add_comment("ENG-1", f"note {n}")
    before = len(jira.requests)

    provider.post_comment_once("ENG-1", "lost answer", ref=REF, retry=True)

    assert _texts(jira, "ENG-1").count("lost answer") == 1  # the 50th newest: found
    assert [(r.method, r.path) for r in jira.requests[before:]] == [
        ("GET", "/rest/api/3/issue/ENG-1/comment"), ("POST", "/rest/api/3/comment/list")
    ]


def test_a_retry_finds_a_copy_many_comments_pushed_down(jira: FakeJira, provider: JiraProvider) -> None:
    """Comments added between the lost try and the retry (people, other apps) push the copy out of
    the newest page: the retry reads on, a page at a time, until it finds it."""
    jira.add_issue("ENG-1")
    provider.post_comment_once("ENG-1", "lost answer", ref=REF, retry=False)
    for n in range(JiraProvider.retry_lookback + 120):
        jira.add_comment("ENG-1", f"note {n}")
    before = len(jira.requests)

    comment = provider.post_comment_once("ENG-1", "lost answer", ref=REF, retry=True)

    assert _texts(jira, "ENG-1").count("lost answer") == 1
    assert comment.id == jira.issues["ENG-1"].comments[0].id
    sent = jira.requests[before:]
    pages = [(r.query["startAt"], r.query["maxResults"]) for r in sent if r.method == "GET"]
    assert pages == [(["0"], ["50"]), (["50"], ["100"]), (["150"], ["100"])]
    assert [r.path for r in sent if r.method == "POST"] == ["/rest/api/3/comment/list"] * 3


def test_a_retry_reads_every_page_before_it_posts(jira: FakeJira, provider: JiraProvider) -> None:
    jira.add_issue("ENG-1")
    for n in range(JiraProvider.retry_lookback + 100):
        jira.add_comment("ENG-1", f"note {n}")
    before = len(jira.requests)

    provider.post_comment_once("ENG-1", "never stored", ref=REF, retry=True)

    assert _texts(jira, "ENG-1").count("never stored") == 1
    assert [(r.method, r.path) for r in jira.requests[before:]] == [
        ("GET", "/rest/api/3/issue/ENG-1/comment"), ("POST", "/rest/api/3/comment/list")
    ] * 2 + [("POST", "/rest/api/3/issue/ENG-1/comment")]


def test_the_fake_lists_comments_newest_first_with_their_properties(
    jira: FakeJira, provider: JiraProvider
) -> None:
    jira.add_issue("ENG-1")
    jira.add_comment("ENG-1", "first", properties={"a": {"n": 1}})
    jira.add_comment("ENG-1", "second")
    jira.add_comment("ENG-1", "third")

    newest = list(provider.client.comments_newest_first("ENG-1", first_page=2, page_size=1))
    assert [adf_text(c["body"]) for c in newest] == ["third", "second", "first"]
    assert [c["properties"] for c in newest] == [[], [], [{"key": "a", "value": {"n": 1}}]]
    pages = [r.query for r in jira.requests_to("GET", "/issue/ENG-1/comment")]
    assert [(q["startAt"], q["maxResults"]) for q in pages] == [(["0"], ["2"]), (["2"], ["1"])]
    # the issue's comment listing has no properties (it expands only renderedBody)
    assert all("properties" not in c for c in provider.client.comments("ENG-1"))


# -- through the outbox --------------------------------------------------------------------------


def test_the_outbox_posts_a_comment_once_when_jiras_answer_was_lost(app: Any, jira: FakeJira) -> None:
    jira.add_issue("ENG-1")
    item_id = enqueue_comment("ENG-1", "⚠️ Implementation failed", provider="jira", kind="outcome")
    db.session.commit()
    jira.lose_next_answer("POST", "/issue/ENG-1/comment", status=502)

    start = utcnow()
    assert outbox.deliver(issue_keys=["ENG-1"], now=start)["failed"] == 1
    assert outbox.deliver(issue_keys=["ENG-1"], now=start + timedelta(hours=1))["sent"] == 1

    db.session.expire_all()
    item = db.session.get(OutboxItem, item_id)
    [stored] = jira.issues["ENG-1"].comments
    assert (item.state, item.attempts, item.remote_id) == ("done", 1, stored.id)
    assert _texts(jira, "ENG-1") == ["⚠️ Implementation failed"]
    assert stored.properties == {REF_PROPERTY: {"ref": outbox.comment_ref(item_id)}}
    # the first try one request; the retry a look-up and no second post
    assert [r.method for r in jira.requests if r.path.endswith("/issue/ENG-1/comment")] == ["POST", "GET"]


def test_a_comment_past_jiras_per_issue_limit_is_given_up_not_retried_for_hours(
    app: Any, jira: FakeJira
) -> None:
    """Jira answers 413 to a comment on an issue holding as many comments as it allows: the outbox
    gives the comment up after its few attempts for a refusal, its error saying what to do, so the
    issue's later writes go out. Before, the 413 reached the outbox as is, a status it does not
    count as a refusal: it retried the comment for some 16 hours, holding the issue's later writes
    back all that time."""
    jira.add_issue("ENG-1")
    jira.comment_limit = 2
    jira.add_comment("ENG-1", "first")
    jira.add_comment("ENG-1", "second")
    item_id = enqueue_comment("ENG-1", "✅ PR opened", provider="jira", kind="outcome")
    db.session.commit()

    later = utcnow()
    for _ in range(outbox.MAX_ATTEMPTS_REFUSED):
        assert outbox.deliver(issue_keys=["ENG-1"], now=later)["failed"] == 1
        later += timedelta(hours=2)

    db.session.expire_all()
    item = db.session.get(OutboxItem, item_id)
    assert (item.state, item.attempts) == ("dead", outbox.MAX_ATTEMPTS_REFUSED)
    assert item.last_error == (
        "Jira's per-issue comment limit is reached on ENG-1 (HTTP 413: the issue holds as many comments "
        "as Jira allows, 5,000 on Jira Cloud): the comment was not posted; delete old comments of the "
        "issue in Jira, then send it again with `aiimpl outbox retry ID`"
    )
    assert _texts(jira, "ENG-1") == ["first", "second"]


def test_the_comment_limit_is_a_refusal_on_every_path(jira: FakeJira) -> None:
    """A first try, a retry and a plain post all raise the refusal (not Jira's 413 as is), keeping
    Jira's answer in the error's detail; the fake answers 413 at its limit and takes comments again
    once some are deleted."""
    from aiimpl_core.services.outbox import REFUSED_STATUSES

    provider = JiraProvider(make_context(jira.config()))
    jira.add_issue("ENG-1")
    jira.comment_limit = 1
    jira.add_comment("ENG-1", "the one comment it may hold")
    for post in (
        lambda: provider.post_comment_once("ENG-1", "hello", ref=REF, retry=False),
        lambda: provider.post_comment_once("ENG-1", "hello", ref=REF, retry=True),
        lambda: provider.post_comment("ENG-1", "hello"),
    ):
        with pytest.raises(ProviderError) as refused:
            post()
        assert refused.value.status in REFUSED_STATUSES and refused.value.retry_after is None
        assert "per-issue comment limit is reached on ENG-1" in refused.value.message
        assert refused.value.detail == {
            "errorMessages": ["This issue has reached the limit of 1 comments."], "errors": {}
        }
    assert [r.status for r in jira.requests_to("POST", "/issue/ENG-1/comment")] == [413, 413, 413]
    jira.issues["ENG-1"].comments.clear()
    assert provider.post_comment("ENG-1", "hello").id


def test_the_fake_refuses_a_comment_longer_than_jira_takes(jira: FakeJira) -> None:
    """32,767 characters of text, counted as Jira (Java) counts them: an emoji is two."""
    provider = JiraProvider(make_context(jira.config()))
    jira.add_issue("ENG-1")

    def doc(text: str) -> dict[str, Any]:
        paragraph = {"type": "paragraph", "content": [{"type": "text", "text": text}]}
        return {"type": "doc", "version": 1, "content": [paragraph]}

    assert provider.client.add_comment("ENG-1", doc("x" * 32_767))["id"]
    for text in ("x" * 32_768, "🚀" * 16_384):
        with pytest.raises(ProviderError) as refused:
            provider.client.add_comment("ENG-1", doc(text))
        assert refused.value.status == 400
        assert refused.value.detail == {
            "errorMessages": [],
            "errors": {"comment": "The entered text is too long. It exceeds the allowed limit of 32,767 "
                                  "characters."},
        }
    assert len(jira.issues["ENG-1"].comments) == 1


def test_the_fake_refuses_a_property_jira_would_refuse() -> None:
    with FakeJira() as jira:
        jira.add_issue("ENG-1")
        provider = JiraProvider(make_context(jira.config()))
        doc = {"type": "doc", "version": 1, "content": []}
        with pytest.raises(ProviderError) as refused:
            provider.client.http.post(
                "/rest/api/3/issue/ENG-1/comment",
                json={"body": doc, "properties": [{"key": REF_PROPERTY}]},
            )
        assert refused.value.status == 400 and "value is required" in refused.value.message
        assert jira.issues["ENG-1"].comments == []
        assert jira.violations == ["comment property on ENG-1: The property value is required."]
