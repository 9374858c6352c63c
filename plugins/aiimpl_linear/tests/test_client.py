"""The GraphQL client: rate limits with Linear's headers, GraphQL errors, retries."""

from __future__ import annotations

import time

import pytest
from aiimpl_core.errors import NotFound, ProviderError

from aiimpl_linear.client import LinearClient, endpoint_wait, rate_limit_wait
from aiimpl_linear.testing import FakeLinear


class Sleeper:
    """Sleeping moves a clock shared by the client and the fake forward, instantly."""

    def __init__(self) -> None:
        self.now = time.time()
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture
def sleeper(fake: FakeLinear) -> Sleeper:
    sleeper = Sleeper()
    fake.clock = sleeper.clock
    return sleeper


@pytest.fixture
def client(fake: FakeLinear, sleeper: Sleeper) -> LinearClient:
    return LinearClient(fake.url, fake.api_key, sleep=sleeper, clock=sleeper.clock, max_wait=10.0)


def test_short_429_is_waited_out_and_retried(
    fake: FakeLinear, client: LinearClient, sleeper: Sleeper
) -> None:
    fake.add_issue("ENG")
    fake.rate_limit(times=1, retry_in=3.0)
    data = client.execute("TriggeredIssues", {"first": 10, "after": None, "label": "AI-Implement"})
    assert len(data["issues"]["nodes"]) == 1
    assert [r.status for r in fake.requests] == [429, 200]
    # the wait comes from X-RateLimit-Requests-Reset (epoch milliseconds), not a guess
    assert len(sleeper.waits) == 1 and 1.5 < sleeper.waits[0] <= 3.25


def test_long_429_raises_with_retry_after_and_holds_later_calls(
    fake: FakeLinear, client: LinearClient, sleeper: Sleeper
) -> None:
    fake.rate_limit(times=1, retry_in=300.0)
    with pytest.raises(ProviderError) as err:
        client.execute("IssueRef", {"id": "ENG-1"})
    assert (
        err.value.status == 429
        and err.value.retry_after is not None
        and 250 < err.value.retry_after <= 300.25
    )
    assert "IssueRef" in err.value.message
    assert sleeper.waits == []
    # the client does not hammer Linear while the budget is exhausted
    with pytest.raises(ProviderError) as again:
        client.execute("IssueRef", {"id": "ENG-1"})
    assert again.value.retry_after is not None and again.value.retry_after > 250
    assert len(fake.requests) == 1


def test_repeated_429_gives_up_after_the_retries(
    fake: FakeLinear, client: LinearClient, sleeper: Sleeper
) -> None:
    fake.rate_limit(times=5, retry_in=2.0)
    with pytest.raises(ProviderError) as err:
        client.execute("IssueRef", {"id": "ENG-1"})
    assert err.value.status == 429 and err.value.retry_after is not None
    assert len(fake.requests) == 3  # the first try and two retries
    assert len(sleeper.waits) == 2


def test_exhausted_budget_on_a_success_makes_the_next_call_wait(
    fake: FakeLinear, client: LinearClient, sleeper: Sleeper
) -> None:
    key = fake.add_issue("ENG")["identifier"]
    fake.set_budget(remaining=1, reset_in=4.0)
    client.execute("IssueRef", {"id": key})  # spends the last request of the budget
    assert sleeper.waits == []
    # the next call waits for the reset before it is sent, and is not refused
    assert client.execute("IssueRef", {"id": key})["issue"]["identifier"] == key
    assert len(sleeper.waits) == 1 and 2.0 < sleeper.waits[0] <= 4.25
    assert [r.status for r in fake.requests] == [200, 200]


def test_an_operations_own_budget_spent_holds_that_operation_only(
    fake: FakeLinear, client: LinearClient, sleeper: Sleeper
) -> None:
    # Linear refuses a query or mutation whose own budget is spent with its RATELIMITED error and
    # says when that budget resets in X-RateLimit-Endpoint-Requests-Reset (the global budget is
    # not spent): the wait is that one, not a guess retried at once
    key = fake.add_issue("ENG")["identifier"]
    fake.limit_endpoint("CreateComment", times=3, retry_in=600.0)
    issue_id = fake.issue(key)["id"]
    with pytest.raises(ProviderError) as err:
        client.execute("CreateComment", {"issueId": issue_id, "body": "hello"})
    assert err.value.retry_after is not None and 550 < err.value.retry_after <= 600.25
    assert "rate limited" in err.value.message and "CreateComment" in err.value.message
    assert sleeper.waits == [] and fake.operations() == ["CreateComment"]
    # the other operations go on; this one is not sent again before its reset
    assert client.execute("IssueRef", {"id": key})["issue"]["identifier"] == key
    with pytest.raises(ProviderError) as again:
        client.execute("CreateComment", {"issueId": issue_id, "body": "hello"})
    assert again.value.retry_after is not None and again.value.retry_after > 550
    assert fake.operations() == ["CreateComment", "IssueRef"]


def test_an_operations_own_short_limit_is_waited_out(
    fake: FakeLinear, client: LinearClient, sleeper: Sleeper
) -> None:
    key = fake.add_issue("ENG")["identifier"]
    fake.limit_endpoint("IssueRef", retry_in=3.0)
    assert client.execute("IssueRef", {"id": key})["issue"]["identifier"] == key
    assert [r.status for r in fake.requests] == [400, 200]
    assert len(sleeper.waits) == 1 and 1.5 < sleeper.waits[0] <= 3.25


def test_graphql_error_names_the_operation(fake: FakeLinear, client: LinearClient) -> None:
    fake.fail("CreateComment", "Database unavailable", code="INTERNAL_ERROR")
    issue = fake.add_issue("ENG")
    with pytest.raises(ProviderError) as err:
        client.execute("CreateComment", {"issueId": issue["id"], "body": "hello"})
    assert err.value.message == "Linear CreateComment failed: Database unavailable [INTERNAL_ERROR]"
    assert fake.comments_of(issue["identifier"]) == []


@pytest.mark.parametrize(("code", "status"), [("AUTHENTICATION_ERROR", 401), ("FORBIDDEN", 403)])
def test_refused_credentials_are_not_a_bad_request(
    fake: FakeLinear, client: LinearClient, code: str, status: int
) -> None:
    """Linear answers a refused key with HTTP 400: it is reported as the credentials' refusal, so
    nothing takes it for a request that can never succeed (the outbox gives those up early)."""
    issue = fake.add_issue("ENG")
    fake.fail("CreateComment", "Authentication required", code=code, status=400)
    with pytest.raises(ProviderError) as err:
        client.execute("CreateComment", {"issueId": issue["id"], "body": "hello"})
    assert err.value.status == status and f"[{code}]" in err.value.message


def test_mutation_is_not_retried_on_5xx(fake: FakeLinear, client: LinearClient) -> None:
    issue = fake.add_issue("ENG")
    fake.fail("CreateComment", "Bad gateway", status=502)
    with pytest.raises(ProviderError) as err:
        client.execute("CreateComment", {"issueId": issue["id"], "body": "hello"})
    assert err.value.status == 502 and "CreateComment" in err.value.message
    assert fake.operations() == ["CreateComment"]  # a comment may have been made: never twice


def test_query_is_retried_on_5xx(fake: FakeLinear, client: LinearClient) -> None:
    key = fake.add_issue("ENG")["identifier"]
    fake.fail("IssueRef", "Bad gateway", status=502)
    assert client.execute("IssueRef", {"id": key})["issue"]["identifier"] == key
    assert fake.operations() == ["IssueRef", "IssueRef"]


def test_no_answer_is_an_error_naming_the_operation_and_what_happened() -> None:
    from aiimpl_core.testing.ports import free_port

    url = f"http://127.0.0.1:{free_port()}/graphql"  # nothing listens there
    client = LinearClient(url, "lin_api_x", sleep=lambda _: None, timeout=1)
    with pytest.raises(ProviderError) as err:
        client.execute("IssueRef", {"id": "ENG-1"})
    assert err.value.message == "Linear IssueRef failed: ConnectionError (the connection was refused)"
    assert err.value.status is None


def test_entity_not_found_is_not_found(fake: FakeLinear, client: LinearClient) -> None:
    with pytest.raises(NotFound, match="IssueRef"):
        client.execute("IssueRef", {"id": "ENG-404"})


def test_unregistered_operation_is_refused_before_sending(fake: FakeLinear, client: LinearClient) -> None:
    with pytest.raises(ProviderError, match="unknown operation"):
        client.execute("DeleteEverything")
    assert fake.requests == []


def test_fake_rejects_documents_that_do_not_validate(fake: FakeLinear) -> None:
    import requests

    resp = requests.post(
        fake.url,
        json={"query": 'query Bad { issue(id: "x") { noSuchField } }', "operationName": "Bad"},
        headers={"Authorization": fake.api_key},
        timeout=5,
    )
    assert resp.status_code == 400
    assert resp.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert fake.validation_errors  # the fixture would fail any test where this happens
    fake.validation_errors.clear()


def test_rate_limit_wait_reads_linear_headers() -> None:
    now = time.time()
    reset_ms = str(int((now + 20) * 1000))
    assert rate_limit_wait({"Retry-After": "7"}, now) == 7.0
    wait = rate_limit_wait(
        {"X-RateLimit-Requests-Remaining": "0", "X-RateLimit-Requests-Reset": reset_ms}, now
    )
    assert wait is not None and 19 < wait <= 20.25
    wait = rate_limit_wait(
        {"X-RateLimit-Complexity-Remaining": "0", "X-RateLimit-Complexity-Reset": reset_ms}, now
    )
    assert wait is not None and 19 < wait <= 20.25
    assert (
        rate_limit_wait({"X-RateLimit-Requests-Remaining": "12", "X-RateLimit-Requests-Reset": reset_ms}, now)
        is None
    )
    assert rate_limit_wait({}, now) is None
    endpoint = {
        "X-RateLimit-Endpoint-Requests-Remaining": "0",
        "X-RateLimit-Endpoint-Requests-Reset": reset_ms,
    }
    wait = endpoint_wait(endpoint, now)
    assert wait is not None and 19 < wait <= 20.25
    assert rate_limit_wait(endpoint, now) is None  # one operation's budget, not the connection's
    assert endpoint_wait({"X-RateLimit-Endpoint-Requests-Remaining": "3",
                          "X-RateLimit-Endpoint-Requests-Reset": reset_ms}, now) is None


def test_credentials_never_reach_the_logs(fake: FakeLinear, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from aiimpl_core.testing.contract import make_context

    from aiimpl_linear.provider import LinearProvider

    caplog.set_level(logging.DEBUG)
    provider = LinearProvider(make_context(fake.config()))
    key = fake.add_issue("ENG")["identifier"]
    provider.post_comment(key, "hello")
    fake.rate_limit(times=1, retry_in=0.5)
    fake.fail("IssueWithComments", "boom")
    with pytest.raises(ProviderError) as err:
        provider.get_issue(key)
    text = caplog.text + str(err.value)
    assert fake.api_key not in text and fake.webhook_secret not in text


def test_a_rate_limit_with_budget_left_waits_for_the_reset_it_names(
    fake: FakeLinear, client: LinearClient, sleeper: Sleeper
) -> None:
    """Linear refuses a query that costs more than is left of a budget (RATELIMITED, "remaining"
    still above 0): the client tried three times a few seconds apart and told the poller to come
    back in 3 s, every cycle. It waits for the latest reset the answer names."""
    fake.add_issue("ENG")
    fake.set_budget(remaining=500, reset_in=1800)
    fake.fail("TriggeredIssues", "Rate limit exceeded", code="RATELIMITED", status=400, times=5)
    with pytest.raises(ProviderError) as err:
        client.execute("TriggeredIssues", {"first": 10, "after": None, "label": "AI-Implement"})
    assert err.value.retry_after is not None and 1790 < err.value.retry_after <= 1801
    assert sleeper.waits == [] and len(fake.requests) == 1


def test_a_rate_limit_that_names_no_reset_is_waited_out_half_a_minute(
    fake: FakeLinear, client: LinearClient, sleeper: Sleeper, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiimpl_linear import client as module

    monkeypatch.setattr(module, "latest_reset_wait", lambda headers, now: None)
    fake.add_issue("ENG")
    fake.fail("TriggeredIssues", "Rate limit exceeded", code="RATELIMITED", status=400, times=5)
    with pytest.raises(ProviderError) as err:
        client.execute("TriggeredIssues", {"first": 10, "after": None, "label": "AI-Implement"})
    assert err.value.retry_after == 30.0 and sleeper.waits == [1.0, 2.0]
