"""The tracker contract against the kit's ``FakeTracker`` (the base class's ``post_comment_once``)
and a tracker that posts a queued comment once per ``ref``; and what it says to trackers that break
it."""
from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from aiimpl_core.errors import ProviderError
from aiimpl_core.testing.contract import TicketingProviderContract, _missing_key, make_context
from aiimpl_core.testing.fakes import DONE_STATE, TRIGGER_LABEL, FakeTracker
from aiimpl_core.types import Comment, Stage, TriggeredPage


def _tracker_with(tracker: FakeTracker, **methods: Any) -> Any:
    """An instance of the fake tracker's provider class with ``methods`` replaced."""
    cls = type("Tracker", (tracker.provider_class,), methods)
    return cls(make_context())


def _once(self: Any, key: str, body: str, *, ref: str, retry: bool) -> Comment:
    """Posts a comment once per ``ref``: a retry answers the comment an earlier try stored."""
    if not (retry and (key, ref) in self.posted):
        self.posted[key, ref] = self.post_comment(key, body)
    return self.posted[key, ref]


class TestFakeTrackerContract(TicketingProviderContract):
    @pytest.fixture
    def tracker(self) -> FakeTracker:
        return FakeTracker()

    @pytest.fixture
    def ticketing_provider(self, tracker: FakeTracker) -> Any:
        return tracker.provider_class(make_context())

    @pytest.fixture
    def contract_issue_key(self, tracker: FakeTracker) -> str:
        return tracker.add("ENG-1").key


class TestOnceTrackerContract(TestFakeTrackerContract):
    @pytest.fixture
    def ticketing_provider(self, tracker: FakeTracker) -> Any:
        return _tracker_with(tracker, post_comment_once=_once, posted={})


def _fails(test: str, provider: Any, key: str, **args: Any) -> str:
    """What the contract's ``test`` says about ``provider`` (it must fail)."""
    with pytest.raises((AssertionError, pytest.fail.Exception)) as err:
        getattr(TicketingProviderContract(), test)(provider, key, **args)
    return str(err.value)


def test_tracker_contract_fails_an_override_whose_retry_posts_a_second_copy() -> None:
    tracker = FakeTracker()
    tracker.add("ENG-1")
    provider = _tracker_with(
        tracker, post_comment_once=lambda self, key, body, *, ref, retry: self.post_comment(key, body)
    )

    message = _fails("test_contract_post_comment_once_retry_leaves_one_copy", provider, "ENG-1")

    assert message.startswith("a retry with the ref of a stored comment left 2 copies on the issue")


def test_tracker_contract_fails_a_retry_that_only_looks() -> None:
    tracker = FakeTracker()
    tracker.add("ENG-1")
    provider = _tracker_with(
        tracker, post_comment_once=lambda self, key, body, *, ref, retry: Comment(body=body, id=ref)
    )

    _fails("test_contract_post_comment_once_posts_once", provider, "ENG-1", retry=True)
    assert tracker.comments["ENG-1"] == []


def test_tracker_contract_skips_the_one_copy_check_for_the_base_class_default() -> None:
    tracker = FakeTracker()
    tracker.add("ENG-1")

    with pytest.raises(pytest.skip.Exception, match="post_comment_once is the base class's"):
        TicketingProviderContract().test_contract_post_comment_once_retry_leaves_one_copy(
            tracker.provider_class(make_context()), "ENG-1")
    assert len(tracker.comments["ENG-1"]) == 2  # the default posted again


def test_tracker_contract_fails_a_missing_issue_that_is_not_not_found() -> None:
    tracker = FakeTracker()

    def get_issue(self: Any, key: str) -> Any:
        raise ProviderError(f"GET /issues/{key} failed with HTTP 404", status=404)

    message = _fails("test_contract_get_issue_of_a_missing_key_raises_not_found",
                     _tracker_with(tracker, get_issue=get_issue), "ENG-100001")

    assert message.startswith("get_issue('ENG-100001') raised ProviderError: GET /issues/ENG-100001 failed")
    assert "raises aiimpl_core.errors.NotFound" in message


def test_tracker_contract_missing_key_is_the_contract_key_with_a_number_of_its_own() -> None:
    assert _missing_key("ENG-1") == "ENG-100001"
    assert _missing_key("OPS-42") == "OPS-100042"
    with pytest.raises(pytest.fail.Exception, match="override the contract_missing_issue_key fixture"):
        _missing_key("ENG-ONE")


def test_make_context_fills_a_providers_defaults_as_the_orchestrator_does() -> None:
    """Without them a backend's tests met `None` where the orchestrator gives the declared default."""
    from aiimpl_core.providers import ConfigVar

    class Defaulted:
        config_vars = (ConfigVar("AIIMPL_X_NAMESPACE", "namespace", default="aiimpl"),
                       ConfigVar("AIIMPL_X_TOKEN", "token", sensitive=True))

    assert make_context({}).setting("AIIMPL_X_NAMESPACE") is None
    context = make_context({"AIIMPL_X_TOKEN": "t"}, provider=Defaulted)
    assert (context.setting("AIIMPL_X_NAMESPACE"), context.setting("AIIMPL_X_TOKEN")) == ("aiimpl", "t")
    given = make_context({"AIIMPL_X_NAMESPACE": "ci"}, provider=Defaulted)
    assert given.setting("AIIMPL_X_NAMESPACE") == "ci"


def test_the_sample_dispatch_request_names_its_run_as_the_orchestrator_does() -> None:
    from aiimpl_core.orm import run_name_for
    from aiimpl_core.testing.contract import sample_dispatch_request

    assert sample_dispatch_request(7).run_name == run_name_for("ENG-1", "implementation", 7)
    assert sample_dispatch_request(7).run_name == "AI-Implement ENG-1 implementation job-7"


def test_tracker_contract_fails_a_mark_done_that_does_nothing() -> None:
    tracker = FakeTracker()
    tracker.add("ENG-1")

    message = _fails("test_contract_mark_done", _tracker_with(tracker, mark_done=lambda self, key: None),
                     "ENG-1", contract_done_states=frozenset({"Done"}))

    assert message.startswith("get_issue reads ENG-1 after mark_done with state None and stage None, not "
                              "done"), message


def test_tracker_contract_fails_a_mark_done_that_only_takes_the_trigger_away() -> None:
    """The issue would stay open in the tracker after its pull request merged."""
    tracker = FakeTracker()
    tracker.add("ENG-1")

    def mark_done(self: Any, key: str) -> None:
        tracker.issues[key].labels.discard(TRIGGER_LABEL)

    message = _fails("test_contract_mark_done", _tracker_with(tracker, mark_done=mark_done), "ENG-1",
                     contract_done_states=frozenset({"Done"}))

    assert message.startswith("get_issue reads ENG-1 after mark_done with state None and stage None, not "
                              "done"), message
    assert "taking the trigger away alone leaves the issue open" in message
    assert not tracker.provider_class(make_context()).get_issue("ENG-1").triggered


def test_tracker_contract_fails_a_mark_done_that_leaves_the_trigger() -> None:
    tracker = FakeTracker()
    tracker.add("ENG-1")

    def get_issue(self: Any, key: str) -> Any:  # reads the trigger label whatever the state
        issue = tracker.provider_class.get_issue(self, key)
        return dataclasses.replace(issue, triggered=TRIGGER_LABEL in issue.labels)

    message = _fails("test_contract_mark_done", _tracker_with(tracker, get_issue=get_issue), "ENG-1",
                     contract_done_states=frozenset({"Done"}))

    assert message.startswith("get_issue reads ENG-1 as triggered after mark_done"), message


@pytest.mark.parametrize(("state", "stage", "done_states"), [
    ("Done", None, {"Done"}),
    ("done", None, {"Done"}),
    ("Closed", None, {"Closed", "Resolved"}),
    (None, Stage.DONE, {"Done"}),
])
def test_tracker_contract_takes_a_done_state_or_stage(state: Any, stage: Any, done_states: set[str]) -> None:
    tracker = FakeTracker()
    tracker.add("ENG-1")

    def get_issue(self: Any, key: str) -> Any:
        issue = tracker.provider_class.get_issue(self, key)
        if tracker.issues[key].done:
            issue = dataclasses.replace(issue, state=state, stage=stage)
        return issue

    TicketingProviderContract().test_contract_mark_done(
        _tracker_with(tracker, get_issue=get_issue), "ENG-1", frozenset(done_states))


def test_fake_tracker_reports_a_done_issue_in_its_done_state() -> None:
    tracker = FakeTracker()
    tracker.add("ENG-1")
    provider = tracker.provider_class(make_context())
    assert provider.get_issue("ENG-1").state is None
    provider.mark_done("ENG-1")
    assert provider.get_issue("ENG-1").state == DONE_STATE == "Done"


def test_tracker_contract_fails_a_mark_done_that_is_not_idempotent() -> None:
    tracker = FakeTracker()
    tracker.add("ENG-1")

    def mark_done(self: Any, key: str) -> None:  # reopens an issue already done
        tracker.issues[key].done = not tracker.issues[key].done

    message = _fails("test_contract_mark_done", _tracker_with(tracker, mark_done=mark_done), "ENG-1",
                     contract_done_states=frozenset({"Done"}))

    assert message.startswith("a second mark_done changed ENG-1 again")


def _provider_of(tracker: FakeTracker, **methods: Any) -> Any:
    tracker.add("ENG-1")
    return _tracker_with(tracker, **methods)


def test_tracker_contract_fails_a_listing_of_no_team_that_raises() -> None:
    tracker = FakeTracker()

    def iter_triggered(self: Any, teams: Any) -> Any:
        query = " OR ".join(f"team = {team}" for team in teams)
        if not query:
            raise ValueError("empty query")
        yield from tracker.provider_class.iter_triggered(self, teams)

    provider = _provider_of(tracker, iter_triggered=iter_triggered)
    with pytest.raises(AssertionError) as err:
        TicketingProviderContract().test_contract_iter_triggered_of_no_team_answers(provider)

    assert str(err.value).startswith("iter_triggered([]) raised ValueError (empty query)")
    assert list(provider.iter_triggered(["ENG"]))  # a mapped team's listing works


@pytest.mark.parametrize(("pages", "said"), [
    ((), "iter_triggered([]) yielded no page"),
    ((TriggeredPage((), complete=False),), "the last page of iter_triggered([]) is not complete"),
])
def test_tracker_contract_fails_a_listing_of_no_team_without_a_complete_page(pages: Any, said: str) -> None:
    provider = _provider_of(FakeTracker(), iter_triggered=lambda self, teams: iter(pages))
    with pytest.raises(AssertionError, match=re.escape(said)):
        TicketingProviderContract().test_contract_iter_triggered_of_no_team_answers(provider)


def test_tracker_contract_fails_a_listing_that_keeps_an_issue_set_stage_moved_on() -> None:
    tracker = FakeTracker()
    ever: set[str] = set()

    def set_stage(self: Any, key: str, stage: Stage) -> None:
        ever.add(key)
        tracker.provider_class.set_stage(self, key, stage)

    def iter_triggered(self: Any, teams: Any) -> Any:  # lists every issue that ever had the trigger
        now = [i for page in tracker.provider_class.iter_triggered(self, teams) for i in page.issues]
        before = [dataclasses.replace(self.get_issue(key), triggered=True, comments=()) for key in ever]
        yield TriggeredPage((*now, *before), complete=True)

    provider = _provider_of(tracker, set_stage=set_stage, iter_triggered=iter_triggered)
    message = _fails("test_contract_set_stage_takes_the_issue_out_of_the_listing", provider, "ENG-1",
                     stage=Stage.IMPLEMENTING)

    assert message.startswith("iter_triggered(['ENG']) still lists ENG-1 as triggered after "
                              "set_stage('ENG-1', implementing)")
    assert not provider.get_issue("ENG-1").triggered  # which the idempotence test checks alone
