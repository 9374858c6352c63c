"""A queued comment carries one identity on every try (``outbox.comment_ref``), and the tracker
plugin is told when a try failed before, so that one which can name or tag a comment finds the copy
a try whose answer was lost did post, instead of posting it twice."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from aiimpl_core.api import admin_outbox
from aiimpl_core.errors import ProviderError
from aiimpl_core.extensions import db
from aiimpl_core.orm import OutboxItem, utcnow
from aiimpl_core.services import outbox
from aiimpl_core.testing.fakes import FakeTracker

from .conftest import outbox_of


def _queue(*bodies: str, issue_key: str = "ENG-1") -> list[int]:
    now = utcnow()
    items = [
        OutboxItem(dedupe_key=f"test:{issue_key}:{n}", op="comment", provider="fake-tracker",
                   issue_key=issue_key, kind="outcome", body=body, state="pending", attempts=0,
                   next_attempt_at=now, created_at=now)
        for n, body in enumerate(bodies)
    ]
    db.session.add_all(items)
    db.session.commit()
    return [item.id for item in items]


@pytest.fixture
def tries(tracker: FakeTracker, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, bool]]:
    """Each try's (body, ref, retry), with a tracker that stores a comment under its ref and finds
    it again on a retry. The first try of the comment "lost" is stored, but its answer is lost (a
    timeout): the try fails, as the HTTP client reports it."""
    seen: list[tuple[str, str, bool]] = []
    stored: dict[str, Any] = {}
    post = tracker.provider_class.post_comment

    def post_comment_once(self: Any, key: str, body: str, *, ref: str, retry: bool) -> Any:
        seen.append((body, ref, retry))
        if retry and ref in stored:
            return stored[ref]
        stored[ref] = post(self, key, body)
        if body == "lost" and not retry:
            raise ProviderError("fake-tracker: POST /comment failed: read timed out", status=None)
        return stored[ref]

    monkeypatch.setattr(tracker.provider_class, "post_comment_once", post_comment_once)
    return seen


def test_every_try_of_a_comment_carries_its_identity_and_says_whether_it_is_a_retry(app, tracker, tries):
    first, second = _queue("lost", "next")
    start = utcnow()
    outbox.deliver(issue_keys=["ENG-1"], now=start)
    outbox.deliver(issue_keys=["ENG-1"], now=start + timedelta(hours=1))

    assert [(body, retry) for body, _, retry in tries] == [("lost", False), ("lost", True), ("next", False)]
    assert tries[0][1] == tries[1][1] == outbox.comment_ref(first)
    assert tries[2][1] == outbox.comment_ref(second) != tries[0][1]
    assert [item.state for item in outbox_of("ENG-1")] == ["done", "done"]
    assert tracker.comments["ENG-1"] == ["lost", "next"]  # the lost answer's comment, once


def test_the_identity_is_a_uuid_4_unique_to_the_item_and_the_install(app) -> None:
    ref = outbox.comment_ref(7)
    parsed = uuid.UUID(ref)
    assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122) and str(parsed) == ref
    assert outbox.comment_ref(7) == ref and outbox.comment_ref(8) != ref
    app.config["AIIMPL_SECRET_KEY"] = "another install's key"
    assert outbox.comment_ref(7) != ref


def test_another_database_with_the_same_key_gives_its_items_other_identities(app) -> None:
    """An install moved to a new database numbers its items from 1 again, with the same key: its
    comments must not be taken for the old database's (found as posted, or refused as another
    issue's). Items written before the database had its id keep the identity they had."""
    import hashlib
    import hmac

    from aiimpl_core.services import settings

    ref = outbox.comment_ref(7)
    assert outbox.install()["legacy_through"] == 0
    settings.put(outbox.INSTALL_KEY, {"id": uuid.uuid4().hex, "legacy_through": 5})  # another database
    app.extensions.pop("aiimpl.install")
    assert outbox.comment_ref(7) != ref

    key = str(app.config["AIIMPL_SECRET_KEY"]).encode()
    legacy = bytearray(hmac.new(key, b"aiimpl-outbox-comment:5", hashlib.sha256).digest()[:16])
    legacy[6], legacy[8] = (legacy[6] & 0x0F) | 0x40, (legacy[8] & 0x3F) | 0x80
    assert outbox.comment_ref(5) == str(uuid.UUID(bytes=bytes(legacy)))  # written before 0006


def test_a_tracker_that_names_no_comment_posts_it_with_post_comment(app, tracker) -> None:
    _queue("plain")
    outbox.deliver(issue_keys=["ENG-1"], now=utcnow())
    assert tracker.comments["ENG-1"] == ["plain"]


def test_a_comment_whose_sender_died_mid_post_is_looked_for_before_it_is_posted_again(app, tracker, tries,
                                                                                     monkeypatch):
    """The sender stops after the tracker stored the comment and before it recorded anything (a
    worker killed at its timeout: ``SystemExit``): the item stays ``sending`` until its lease runs
    out, and the next sender is told the comment may be stored already."""
    post_once = tracker.provider_class.post_comment_once

    def killed_after_posting(self: Any, key: str, body: str, *, ref: str, retry: bool) -> Any:
        comment = post_once(self, key, body, ref=ref, retry=retry)
        if not retry:
            raise SystemExit(1)
        return comment

    monkeypatch.setattr(tracker.provider_class, "post_comment_once", killed_after_posting)
    item_id, = _queue("killed")
    start = utcnow()
    with pytest.raises(SystemExit):
        outbox.deliver(issue_keys=["ENG-1"], now=start)
    db.session.rollback()
    outbox.deliver(issue_keys=["ENG-1"], now=start + outbox.LEASE - timedelta(seconds=1))  # still held
    outbox.deliver(issue_keys=["ENG-1"], now=start + outbox.LEASE + timedelta(seconds=1))

    assert [(body, retry) for body, _, retry in tries] == [("killed", False), ("killed", True)]
    assert tracker.comments["ENG-1"] == ["killed"]
    item, = outbox_of("ENG-1")
    assert item.state == "done" and "lease ran out" in (item.last_error or "")


def test_a_dead_comment_put_back_in_the_queue_is_still_a_retry(app, tracker, tries):
    """Re-queuing resets the attempts, not what they say: the comment may have been stored."""
    item_id, = _queue("lost")
    db.session.execute(update(OutboxItem).where(OutboxItem.id == item_id)
                       .values(state="dead", attempts=25, last_error="fake-tracker: read timed out"))
    db.session.commit()
    assert admin_outbox._requeue(item_id, utcnow())
    outbox.deliver(issue_keys=["ENG-1"], now=utcnow() + timedelta(seconds=1))
    assert [(body, retry) for body, _, retry in tries] == [("lost", True)]


def test_items_an_older_version_wrote_while_downgraded_keep_their_old_identity(app) -> None:
    """A downgrade past 0006 and an upgrade again: the items the older version wrote meanwhile
    (``legacy_ranges``) keep the identity it gave them, the ones before and after keep this
    database's."""
    import hashlib
    import hmac

    from aiimpl_core.services import settings

    install = {"id": uuid.uuid4().hex, "legacy_through": 5, "legacy_ranges": [[9, 12]]}
    settings.put(outbox.INSTALL_KEY, install)
    app.extensions.pop("aiimpl.install", None)
    key = str(app.config["AIIMPL_SECRET_KEY"]).encode()

    def ref(salt: str, item_id: int) -> str:
        digest = bytearray(hmac.new(key, f"aiimpl-outbox-comment:{salt}{item_id}".encode(),
                                    hashlib.sha256).digest()[:16])
        digest[6], digest[8] = (digest[6] & 0x0F) | 0x40, (digest[8] & 0x3F) | 0x80
        return str(uuid.UUID(bytes=bytes(digest)))

    for item_id in (5, 9, 12):
        assert outbox.comment_ref(item_id) == ref("", item_id)
    for item_id in (6, 8, 13):
        assert outbox.comment_ref(item_id) == ref(f"{install['id']}:", item_id)
