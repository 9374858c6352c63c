"""An in-memory tracker and runner backend, registered as real plugins.

The engine's tests drive whole lifecycles with these; plugin authors can use them as worked
examples. State lives on the :class:`FakeTracker` / :class:`FakeRunner` object, and the provider
class each registers is bound to it::

    tracker, runner = FakeTracker(), FakeRunner()
    app = create_app(config, plugins=[tracker.plugin, runner.plugin], load_entrypoints=False)
"""
from __future__ import annotations

import itertools
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from .. import hookimpl
from ..errors import DispatchError, NotFound, ProviderError
from ..providers import RunnerBackend, TicketingProvider
from ..types import (
    BlockingLink,
    Comment,
    DispatchRequest,
    DispatchResult,
    InFlightRun,
    RunPhase,
    RunState,
    SessionInfo,
    Stage,
    SyncResult,
    TrackerIssue,
    TriggeredPage,
)

STAGE_LABELS = {
    Stage.PLANNING: "AI-Planning",
    Stage.PLAN_COMPLETE: "Plan-Complete",
    Stage.IMPLEMENTING: "AI-Working",
    Stage.PR_OPENED: "Ready for Review",
}
TRIGGER_LABEL = "AI-Implement"
AI_LABELS = {TRIGGER_LABEL, *STAGE_LABELS.values()}
#: the workflow state ``get_issue`` reports for an issue ``mark_done`` closed (Linear's and Jira's
#: usual completed state); an open issue reports none
DONE_STATE = "Done"


@dataclass
class FakeIssue:
    key: str
    title: str = "An issue"
    description: str = ""
    labels: set[str] = field(default_factory=lambda: {TRIGGER_LABEL})
    blocked_by: list[BlockingLink] = field(default_factory=list)
    done: bool = False

    @property
    def team(self) -> str:
        return self.key.rsplit("-", 1)[0]


class FakeTracker:
    """A label-based tracker (Linear's lifecycle) kept in memory. ``mark_done`` closes an issue
    (:attr:`FakeIssue.done`): ``get_issue`` then reports its ``state`` as :data:`DONE_STATE`.

    :param provider_id: the ticketing provider id it registers.
    :param page_size: issues per page of ``iter_triggered``.
    """

    def __init__(self, provider_id: str = "fake-tracker", page_size: int = 50,
                 display_name: str = "Fake tracker") -> None:
        self.provider_id = provider_id
        self.display_name = display_name
        #: called with (issue key, body) after each posted comment
        self.on_comment: list[Callable[[str, str], None]] = []
        self.page_size = page_size
        self.issues: dict[str, FakeIssue] = {}
        self.comments: dict[str, list[str]] = defaultdict(list)
        self.calls: list[tuple[str, Any]] = []
        self.fail: dict[str, Exception] = {}  # operation name -> error raised until removed
        #: issues the listing shows as they were when :meth:`lag_listing` froze them (a search
        #: index that lags behind the tracker's writes, as Jira's does)
        self.indexed: dict[str, FakeIssue] = {}
        self.lock = threading.Lock()
        self.plugin = self._make_plugin()

    def add(self, key: str, **kw: Any) -> FakeIssue:
        issue = FakeIssue(key, **kw)
        self.issues[key] = issue
        return issue

    def trigger(self, key: str) -> None:
        self.issues[key].labels.add(TRIGGER_LABEL)

    def lag_listing(self, key: str) -> None:
        """From now on ``iter_triggered`` shows the issue as it is now, until :meth:`catch_up`."""
        issue = self.issues[key]
        self.indexed[key] = replace(issue, labels=set(issue.labels),
                                    blocked_by=list(issue.blocked_by))

    def catch_up(self) -> None:
        """The listing shows every issue as it is again."""
        self.indexed.clear()

    def stage_labels(self, key: str) -> set[str]:
        return self.issues[key].labels & AI_LABELS

    def _check(self, op: str, arg: Any) -> None:
        with self.lock:
            self.calls.append((op, arg))
        err = self.fail.get(op)
        if err is not None:
            raise err

    def _view(self, issue: FakeIssue, full: bool = False) -> TrackerIssue:
        stage = None
        for st, label in STAGE_LABELS.items():
            if label in issue.labels:
                stage = st
        return TrackerIssue(
            key=issue.key,
            team_key=issue.team,
            title=issue.title,
            provider=self.provider_id,
            description=issue.description,
            url=f"https://tracker.test/{issue.key}",
            state=DONE_STATE if issue.done else None,
            labels=tuple(sorted(issue.labels)),
            stage=stage,
            triggered=TRIGGER_LABEL in issue.labels and not issue.done,
            blocked_by=tuple(issue.blocked_by),
            comments=tuple(
                Comment(body=b, id=str(i)) for i, b in enumerate(self.comments[issue.key] if full else ())
            ),
        )

    def _make_plugin(self) -> object:
        state = self

        class Provider(TicketingProvider):
            id = state.provider_id
            display_name = state.display_name

            def iter_triggered(self, teams: Sequence[str]) -> Iterator[TriggeredPage]:
                state._check("iter_triggered", tuple(teams))
                listed = [state.indexed.get(key, issue) for key, issue in state.issues.items()]
                triggered = [i for i in listed if TRIGGER_LABEL in i.labels and not i.done]
                if not triggered:
                    yield TriggeredPage((), complete=True)
                    return
                for n in range(0, len(triggered), state.page_size):
                    chunk = triggered[n : n + state.page_size]
                    if n:
                        state._check("iter_triggered_page", n)
                    yield TriggeredPage(
                        tuple(state._view(i) for i in chunk), complete=n + state.page_size >= len(triggered)
                    )

            def get_issue(self, key: str) -> TrackerIssue:
                state._check("get_issue", key)
                if key not in state.issues:
                    raise NotFound(f"issue {key} not found")
                return state._view(state.issues[key], full=True)

            def post_comment(self, key: str, body: str) -> Comment:
                state._check("post_comment", key)
                with state.lock:
                    state.comments[key].append(body)
                    comment = Comment(body=body, id=str(len(state.comments[key])))
                for callback in state.on_comment:
                    callback(key, body)
                return comment

            def set_stage(self, key: str, stage: Stage) -> None:
                state._check("set_stage", (key, stage))
                issue = state.issues[key]
                issue.labels -= AI_LABELS
                if stage in STAGE_LABELS:
                    issue.labels.add(STAGE_LABELS[stage])

            def mark_done(self, key: str) -> None:
                state._check("mark_done", key)
                state.issues[key].done = True

        class Plugin:
            __name__ = f"fake-tracker-{state.provider_id}"

            @hookimpl
            def aiimpl_register_ticketing_providers(self, register: Callable[..., None]) -> None:
                register(Provider)

        self.provider_class = Provider
        return Plugin()


@dataclass
class FakeRun:
    request: DispatchRequest
    run_id: str
    phase: RunPhase = RunPhase.PENDING
    state_override: RunState | None = None


class FakeRunner:
    """A runner backend that starts nothing and reports whatever the test sets.

    :param backend_id: the backend id (also accepted as a mapping's ``executionMode``).
    :param runner_mode: the runner mode that forces it, if any.
    :param link_on_dispatch: whether ``dispatch`` returns the run id at once.
    """

    _ids: ClassVar[Iterator[int]] = itertools.count(1)

    def __init__(
        self,
        backend_id: str = "github-actions",
        runner_mode: str | None = "gha",
        *,
        link_on_dispatch: bool = True,
        sessions: bool = False,
        secrets: bool = False,
        workflow_sync: bool = False,
        gap_fill: bool = False,
        mapping_selectable: bool = True,
    ) -> None:
        self.backend_id = backend_id
        self.runner_mode = runner_mode
        self.link_on_dispatch = link_on_dispatch
        self.runs: dict[int, FakeRun] = {}
        self.poll_calls: list[list[int]] = []
        self.dispatch_error: Exception | None = None
        #: errors raised by the next dispatches, one each, before ``dispatch_error``
        self.next_dispatch_errors: list[Exception] = []
        self.poll_error: Exception | None = None
        self.synced: list[str] = []
        #: what each sync answers as its warnings (see :class:`~aiimpl_core.types.SyncResult`)
        self.sync_warnings: tuple[str, ...] = ()
        self.destroyed: list[str] = []
        #: the lifetime each ``sweep`` was called with
        self.sweeps: list[int] = []
        self.sweep_error: Exception | None = None
        self.lock = threading.Lock()
        self._flags = dict(
            supports_sessions=sessions,
            supports_secrets=secrets,
            supports_workflow_sync=workflow_sync,
            supports_gap_fill=gap_fill,
            mapping_selectable=mapping_selectable,
        )
        self.plugin = self._make_plugin()

    def set_state(self, job_id: int, phase: RunPhase, **kw: Any) -> None:
        run = self.runs[job_id]
        run.phase = phase
        run.state_override = RunState(job_id=job_id, phase=phase, run_id=run.run_id, **kw)

    def _make_plugin(self) -> object:
        state = self

        class Backend(RunnerBackend):
            id = state.backend_id
            display_name = f"Fake {state.backend_id}"
            runner_mode = state.runner_mode
            supports_sessions = state._flags["supports_sessions"]
            supports_secrets = state._flags["supports_secrets"]
            supports_workflow_sync = state._flags["supports_workflow_sync"]
            supports_gap_fill = state._flags["supports_gap_fill"]
            mapping_selectable = state._flags["mapping_selectable"]

            def dispatch(self, request: DispatchRequest) -> DispatchResult:
                with state.lock:
                    error = state.next_dispatch_errors.pop(0) if state.next_dispatch_errors else None
                if error is not None:
                    raise error
                if state.dispatch_error is not None:
                    raise state.dispatch_error
                run_id = f"run-{next(FakeRunner._ids)}"
                with state.lock:
                    state.runs[request.job_id] = FakeRun(request, run_id)
                if state.link_on_dispatch:
                    return DispatchResult(run_id=run_id, run_url=f"https://runs.test/{run_id}", linked=True)
                return DispatchResult()

            def poll_runs(self, runs: Sequence[InFlightRun]) -> Sequence[RunState]:
                state.poll_calls.append([r.job_id for r in runs])
                if state.poll_error is not None:
                    raise state.poll_error
                out = []
                for r in runs:
                    run = state.runs.get(r.job_id)
                    if run is None:
                        out.append(RunState(job_id=r.job_id, phase=RunPhase.NOT_FOUND))
                    elif run.state_override is not None:
                        out.append(run.state_override)
                    else:
                        out.append(RunState(job_id=r.job_id, phase=run.phase, run_id=run.run_id))
                return out

            def cancel(self, run: InFlightRun) -> None:
                state.destroyed.append(run.run_id or str(run.job_id))

            def sweep(self, lifetime_seconds: int) -> None:
                state.sweeps.append(lifetime_seconds)
                if state.sweep_error is not None:
                    raise state.sweep_error

            def list_sessions(self) -> Sequence[SessionInfo]:
                return [
                    SessionInfo(id=r.run_id, backend=state.backend_id, state=str(r.phase), job_id=j,
                                issue_key=r.request.issue_key)
                    for j, r in state.runs.items()
                    if r.phase in (RunPhase.PENDING, RunPhase.RUNNING) and r.run_id not in state.destroyed
                ]

            def destroy_session(self, session_id: str) -> bool:
                if any(r.run_id == session_id for r in state.runs.values()):
                    state.destroyed.append(session_id)
                    return True
                return False

            def sync_workflows(self, mapping: Any) -> SyncResult:
                state.synced.append(mapping.team_key)
                return SyncResult(unchanged=(".github/workflows/ai-implement.yml",),
                                  warnings=state.sync_warnings)

            def dispatch_gap_fill(self, request: DispatchRequest) -> DispatchResult:
                if state.dispatch_error is not None:
                    raise state.dispatch_error
                return self.dispatch(request)

        class Plugin:
            __name__ = f"fake-runner-{state.backend_id}"

            @hookimpl
            def aiimpl_register_runner_backends(self, register: Callable[..., None]) -> None:
                register(Backend)

        self.backend_class = Backend
        return Plugin()


def add_mapping(team_key: str = "ENG", *, provider: str = "fake-tracker", **values: Any) -> Any:
    """Put a mapping (a "Project") in the current app's database, committed; the row.

    Team ``team_key`` → ``acme/<team key in lower case>`` on ``main``, run by ``github-actions``,
    its issues in the tracker ``provider``; ``values`` sets any other column, or overrides these.
    """
    from ..extensions import db
    from ..orm import Mapping

    row = Mapping(**{
        "team_key": team_key, "owner": "acme", "repo": team_key.lower(), "default_branch": "main",
        "execution_mode": "github-actions", "ticketing": {"provider": provider}, **values,
    })
    db.session.add(row)
    db.session.commit()
    return row


_outbox_keys = itertools.count(1)


def queue_outbox_item(issue_key: str = "ENG-1", *, op: str = "comment", state: str = "pending",
                      **values: Any) -> int:
    """Put a tracker write in the outbox of the current app's database, committed; its id.

    A comment gets a body and the kind ``outcome``; a ``dead`` item gets the attempts and the error
    of a comment the tracker refused. ``values`` sets any other column, or overrides these.
    """
    from ..extensions import db
    from ..orm import OutboxItem, utcnow

    now, dead = utcnow(), state == "dead"
    row = OutboxItem(**{
        "dedupe_key": f"test:{issue_key}:{next(_outbox_keys)}",
        "op": op, "provider": "fake-tracker", "issue_key": issue_key, "state": state,
        "kind": "outcome" if op == "comment" else None,
        "body": "A comment." if op == "comment" else None,
        "attempts": 3 if dead else 0,
        "last_error": "fake-tracker: POST /comments failed with HTTP 422: comment rejected" if dead else None,
        "next_attempt_at": now, "created_at": now,
        **values,
    })
    db.session.add(row)
    db.session.flush()
    item_id = row.id
    db.session.commit()  # (reading the id after it would begin a transaction, and with it a snapshot)
    return item_id


def fail_with(status: int, message: str = "fake failure", retry_after: float | None = None) -> ProviderError:
    """An error like the HTTP helper raises for a remote failure."""
    return ProviderError(message, status=status, retry_after=retry_after)


def dispatch_refused(status: int = 422, detail: str = "Workflow does not have 'workflow_dispatch' trigger"):
    return DispatchError(f"dispatch failed with HTTP {status}", status=status, detail=detail)


__all__ = ["FakeIssue", "FakeRunner", "FakeTracker", "dispatch_refused", "fail_with"]
