"""The ``linear`` ticketing provider: triggered issues, stage labels, comments, done on merge."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from aiimpl_core.errors import NotFound, ProviderConfigError, ProviderError
from aiimpl_core.http import url_setting_problem
from aiimpl_core.providers import ProviderContext, TicketingProvider
from aiimpl_core.types import BlockingLink, CheckResult, Comment, Stage, TrackerIssue, TriggeredPage

from .client import LinearClient
from .config import (
    AI_LABELS,
    API_KEY_SECRET,
    CLOSED_STATE_TYPES,
    CONFIG_VARS,
    DONE_STATE_TYPE,
    LABEL_STAGES,
    PROVIDER_ID,
    STAGE_LABELS,
    TRIGGER_LABEL,
    LinearSettings,
    authorization_header,
    validate_ticketing,
)

if TYPE_CHECKING:
    from aiimpl_core.types import MappingView

#: Seconds a key read from the secret store is reused.
STORED_SECRET_TTL = 30.0

#: Teams checked per ``SetupCheck`` request: their AI labels (five names, each at most once per team
#: and once in the workspace) must fit on its page of 250 labels, and the teams on its page of 100.
SETUP_CHECK_TEAMS = 40

#: HTTP statuses of an answer Linear gave (GraphQL ``errors``), as opposed to a lost one or a proxy's.
ANSWERED_STATUSES = frozenset({200, 400})

#: Colours of the labels we create (Linear requires none, but a visible colour helps people).
LABEL_COLORS = {
    TRIGGER_LABEL: "#5e6ad2",
    "AI-Planning": "#f2c94c",
    "Plan-Complete": "#26b5ce",
    "AI-Working": "#f2994a",
    "Ready for Review": "#4cb782",
}


#: our labels' names as Linear compares them (it ignores case)
_AI_FOLDED = frozenset(name.casefold() for name in AI_LABELS)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _nodes(connection: Any) -> list[dict[str, Any]]:
    if isinstance(connection, dict) and isinstance(connection.get("nodes"), list):
        return [n for n in connection["nodes"] if isinstance(n, dict)]
    return []


def _next_cursor(operation: str, info: Mapping[str, Any], read_from: set[str], what: str = "issues") -> str:
    """The cursor of the next page of a connection, from a page (read by ``operation``; the
    connection was read from the cursors ``read_from``, to which the new one is added) that says
    more ``what`` follow.

    :raises ProviderError: when the page gives no usable cursor. Taken for the end of the
        connection, such a page dropped everything after it without a word: the triggered issues
        after it, an issue's relations (a blocker among them, and a blocked issue was dispatched)
        or its comments (context the agent never saw). As a failed read, it is reported as any
        other failure of that read is, and read again next time.
    """
    cursor = info.get("endCursor")
    if not isinstance(cursor, str) or not cursor:
        problem = "gives no cursor to read them from"
    elif cursor in read_from:
        problem = "gives back a cursor it was read from"  # read again, it would never end
    else:
        read_from.add(cursor)
        return cursor
    raise ProviderError(
        f"Linear {operation} failed: the page says more {what} follow but {problem} (pageInfo.endCursor)",
        provider=PROVIDER_ID,
    )


def _comment(node: dict[str, Any], body: str = "") -> Comment:
    """A :class:`Comment` from a comment node (``body``: the text sent, should Linear echo none)."""
    return Comment(
        body=str(node.get("body") or body),
        author=(node.get("user") or {}).get("name"),
        created_at=_parse_time(node.get("createdAt")),
        id=str(node["id"]) if node.get("id") else None,
    )


def stage_of(labels: Sequence[str]) -> Stage | None:
    """The lifecycle stage an issue's labels show (the furthest one when several are present)."""
    found = [LABEL_STAGES[name.casefold()] for name in labels if name.casefold() in LABEL_STAGES]
    order = list(STAGE_LABELS)
    return max(found, key=order.index) if found else None


class MappedTeams:
    """The team keys of the Linear mappings, found from a team key as Linear writes it.

    Linear's team keys are upper-case (issues ``ENG-1``, ``ENG-2``), but a mapping may have been
    saved as ``eng``; the core finds an issue's mapping by the exact key the provider reports, so
    an issue is reported under its team's key as the mapping spells it, or no mapping would ever
    match it. Of mappings whose keys differ only in case, the one spelled as Linear spells the key
    wins, else the first in sorted order: the same one whichever call asks.
    """

    def __init__(self, team_keys: Iterable[str]) -> None:
        self._keys = frozenset(team_keys)
        self._folded: dict[str, str] = {}
        for key in sorted(self._keys):
            self._folded.setdefault(key.casefold(), key)

    def __contains__(self, team_key: object) -> bool:
        return isinstance(team_key, str) and team_key.casefold() in self._folded

    def spelled(self, team_key: str) -> str:
        """``team_key`` as its mapping spells it; unchanged for a team without a mapping."""
        if team_key in self._keys:
            return team_key
        return self._folded.get(team_key.casefold(), team_key)


class LinearProvider(TicketingProvider):
    """Linear, through its GraphQL API. Stages are labels; the trigger is the label ``AI-Implement``."""

    id: ClassVar[str] = PROVIDER_ID
    display_name: ClassVar[str] = "Linear"
    trigger_hint: ClassVar[str] = f"add the `{TRIGGER_LABEL}` label"
    setup_hint: ClassVar[str] = (
        "set AIIMPL_LINEAR_API_KEY or AIIMPL_LINEAR_OAUTH_TOKEN, or store the global secret "
        f"{API_KEY_SECRET} (`aiimpl secrets set`, once a runner backend that keeps secrets is configured)"
    )
    config_vars = CONFIG_VARS
    supports_webhooks: ClassVar[bool] = True

    @classmethod
    def settings_problem(cls, config: Mapping[str, Any]) -> str | None:
        if problem := url_setting_problem(config, "AIIMPL_LINEAR_API_URL"):
            return problem
        try:
            LinearSettings.from_config(config)
        except ProviderConfigError as exc:
            return exc.message
        return None

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self._lock = threading.Lock()
        self._client: LinearClient | None = None
        self._client_auth: str | None = None
        self._stored: tuple[float, str | None] | None = None  # (read at, stored API key)
        # Linear ids never change, so what we learn once is kept for the life of the process --
        # but a label or a workflow state can be deleted (and created again under a new id), so
        # a cached id that Linear no longer knows is forgotten and looked up again.
        self._issue_refs: dict[str, tuple[str, str]] = {}  # identifier -> (issue id, team id)
        self._labels: dict[tuple[str, str], str] = {}  # (team id, folded name) -> label id
        #: the ids our stage labels have had in each team, kept when the names' ids are looked up
        #: again: a label a person renamed is still ours to take off
        self._ours: dict[str, set[str]] = {}
        self._done_states: dict[str, str] = {}  # team id -> workflow state id

    # -- connection ---------------------------------------------------------------------------

    @property
    def settings(self) -> LinearSettings:
        return LinearSettings.from_config(self.context.config)

    def _authorization(self) -> str | None:
        settings = self.settings
        header = authorization_header(settings.api_key, settings.oauth_token)
        if header:
            return header
        # The stored secret is a database read: remember it briefly rather than on every call,
        # so a changed key is still picked up within STORED_SECRET_TTL seconds.
        now = time.monotonic()
        if self._stored is None or now - self._stored[0] > STORED_SECRET_TTL:
            try:
                value = self.context.secret(API_KEY_SECRET, None)
            except Exception:  # noqa: BLE001 - an unreadable secret store means "not configured"
                self.log.warning("could not read the stored secret %s", API_KEY_SECRET)
                value = None
            # read as the variable is: a key pasted with its line break is the same key
            self._stored = (now, value.strip() or None if isinstance(value, str) else None)
        return authorization_header(self._stored[1], None)

    def is_configured(self) -> bool:
        return self._authorization() is not None

    @property
    def client(self) -> LinearClient:
        """The GraphQL client, rebuilt when the credentials change."""
        auth = self._authorization()
        if auth is None:
            raise self.not_configured()
        with self._lock:
            if self._client is None or self._client_auth != auth:
                settings = self.settings
                self._client = LinearClient(
                    settings.api_url, auth, http_factory=self.context.http, timeout=settings.timeout
                )
                self._client_auth = auth
            return self._client

    def validate_mapping(self, mapping: Mapping[str, Any]) -> None:
        validate_ticketing(mapping)

    # -- reading ------------------------------------------------------------------------------

    def iter_triggered(self, teams: Sequence[str]) -> Iterator[TriggeredPage]:
        # All teams, not only ``teams``: a triggered issue of an unmapped team is shown to the
        # operator as a ``no-mapping`` blocker instead of being silently ignored.
        client = self.client
        after: str | None = None
        page_size = self.settings.page_size
        mapped = MappedTeams(teams)
        left_out: list[str] = []  # issues whose other relations could not be read
        read_from: set[str] = set()
        while True:
            data = client.execute(
                "TriggeredIssues", {"first": page_size, "after": after, "label": TRIGGER_LABEL}
            )
            connection = data.get("issues") or {}
            info = connection.get("pageInfo") or {}
            more = bool(info.get("hasNextPage"))
            # checked first: a broken answer costs no read of its issues' other relations
            cursor = _next_cursor("TriggeredIssues", info, read_from) if more else None
            issues = tuple(
                self._issue(node, mapped, listed=True)
                for node in (self._listed_relations(n, mapped, left_out) for n in _nodes(connection))
                if node is not None
            )
            # The parsed answer is let go before the page is handed over: held while the caller
            # checks and records the page, its thousands of dicts and lists outlived the garbage
            # collector's young generations, and moving them to the oldest one brought on full
            # collections, each walking every object of the process (two per cycle at 10,000
            # triggered issues instead of one).
            del data, connection, info
            # (a listing that left issues out says nothing of whether they still carry the trigger)
            yield TriggeredPage(issues, complete=not more and not left_out)
            if not more:
                return
            after = cursor

    def get_issue(self, key: str) -> TrackerIssue:
        data = self.client.execute("IssueWithComments", {"id": key})
        node = data.get("issue")
        if not isinstance(node, dict):
            raise NotFound(f"Linear issue {key} not found")
        node = self._with_all_pages(node, "comments", "IssueWithComments", "IssueComments", "comments")
        node = self._with_all_relations(node, "IssueWithComments")
        return self._issue(node, self._mapped_teams(), with_comments=True)

    def team_of(self, key: str) -> str:
        """The team of an issue key as its mapping spells it (``ENG-12`` is team ``eng`` when the
        mapping was saved so): the core compares it with the mappings' keys as they are."""
        return self._mapped_teams().spelled(super().team_of(key))

    def _mapped_teams(self) -> MappedTeams:
        """The team keys of the Linear mappings, read now: a mapping saved a moment ago counts."""
        return MappedTeams(m.team_key for m in self.context.mappings() if m.ticketing_provider == PROVIDER_ID)

    def _listed_relations(
        self, node: dict[str, Any], mapped: MappedTeams, left_out: list[str]
    ) -> dict[str, Any] | None:
        """A listed issue with every one of its relations, or ``None`` when they could not be
        read (the issue is then left out of this listing, and read again by the next one).

        Only the issues of mapped teams have the rest of their relations read (one query more
        each): another team's triggered issue is shown as a ``no-mapping`` blocker, which its
        relations do not change. One issue whose relations cannot be read (deleted meanwhile, a
        rate limit on that query) no longer fails the listing of every team; after one such
        failure the listing asks for no more of them."""
        if (node.get("team") or {}).get("key") not in mapped:
            return node
        if left_out:
            key = str(node.get("identifier") or node.get("id"))
            info = (node.get("inverseRelations") or {}).get("pageInfo") or {}
            if info.get("hasNextPage"):
                left_out.append(key)
                return None
            return node
        try:
            return self._with_all_relations(node, "TriggeredIssues")
        except (ProviderError, NotFound) as exc:  # (NotFound: the issue deleted since the page)
            key = str(node.get("identifier") or node.get("id"))
            left_out.append(key)
            self.log.warning("the relations of %s could not be read (%s): it is left out of this listing, "
                             "and read again by the next one", key, exc.message)
            return None

    def _with_all_relations(self, node: dict[str, Any], read_by: str) -> dict[str, Any]:
        """``node`` (read by the query ``read_by``) with every one of its inverse relations: a
        relation that blocks the issue may be on any page of them."""
        return self._with_all_pages(node, "inverseRelations", read_by, "IssueInverseRelations", "relations")

    def _with_all_pages(
        self, node: dict[str, Any], field: str, read_by: str, operation: str, what: str
    ) -> dict[str, Any]:
        """``node`` with every node of its connection ``field``. The query ``read_by`` read only a
        first page (with its ``pageInfo``); the rest are read here with ``operation`` (variables
        ``id`` and ``after``), for the few issues that have more.

        :raises ProviderError: when a page says more ``what`` follow without a new cursor to read
            them from (see :func:`_next_cursor`), naming the query that gave it.
        """
        connection = node.get(field)
        info = (connection.get("pageInfo") if isinstance(connection, dict) else None) or {}
        issue_id = node.get("id") or node.get("identifier")
        if not info.get("hasNextPage") or not issue_id:
            return node
        read_from: set[str] = set()  # (the first page was read from no cursor)
        after = _next_cursor(read_by, info, read_from, what)
        nodes = _nodes(connection)
        while True:
            data = self.client.execute(operation, {"id": issue_id, "after": after})
            page = (data.get("issue") or {}).get(field) or {}
            nodes.extend(_nodes(page))
            info = page.get("pageInfo") or {}
            if not info.get("hasNextPage"):
                return {**node, field: {"nodes": nodes}}
            after = _next_cursor(operation, info, read_from, what)

    def _issue(
        self, node: dict[str, Any], mapped: MappedTeams, *, with_comments: bool = False, listed: bool = False
    ) -> TrackerIssue:
        """A :class:`TrackerIssue` from an issue node, its team named as ``mapped`` spells it (see
        :class:`MappedTeams`). ``listed``: the node comes from the triggered listing, whose filter
        already guarantees a label of the trigger's name (the listing reads only a short page of
        labels, which might not include it).

        A retired label stays on the issues that carry it but can be added to none: an issue whose
        only labels of the trigger's name are retired is not triggered (it was labelled before the
        label was retired, and no one can ask for a run with it now)."""
        team = node.get("team") or {}
        identifier = str(node.get("identifier") or "")
        if node.get("id") and team.get("id"):
            self._issue_refs[identifier] = (str(node["id"]), str(team["id"]))
        labels = tuple(str(label.get("name")) for label in _nodes(node.get("labels")) if label.get("name"))
        trigger = [
            label
            for label in _nodes(node.get("labels"))
            if str(label.get("name") or "").casefold() == TRIGGER_LABEL.casefold()
        ]
        # one the listing's page of labels left out is taken as active
        carries_trigger = any(not label.get("retiredAt") for label in trigger) or (listed and not trigger)
        state = node.get("state") or {}
        blockers = []
        for relation in _nodes(node.get("inverseRelations")):
            # an inverse relation of type "blocks" is one where the *other* issue blocks this one
            other = relation.get("issue") or {}
            if relation.get("type") != "blocks" or not other.get("identifier"):
                continue
            other_state = (other.get("state") or {}).get("type")
            blockers.append(
                BlockingLink(
                    key=str(other["identifier"]),
                    title=str(other.get("title") or ""),
                    open=other_state not in CLOSED_STATE_TYPES,
                )
            )
        comments: tuple[Comment, ...] = ()
        if with_comments:
            comments = tuple(
                _comment(c)
                # oldest first, as a conversation reads (and the agent's context shows it)
                for c in sorted(_nodes(node.get("comments")), key=lambda c: str(c.get("createdAt") or ""))
            )
        return TrackerIssue(
            key=identifier,
            team_key=mapped.spelled(str(team.get("key") or super().team_of(identifier))),
            title=str(node.get("title") or ""),
            provider=PROVIDER_ID,
            description=str(node.get("description") or ""),
            url=node.get("url"),
            state=state.get("name"),
            labels=labels,
            stage=stage_of(labels),
            # (an issue archived or in the trash, which a listing leaves out, is read by its id
            # all the same: a webhook's delivery of one still labelled dispatched it)
            triggered=carries_trigger and state.get("type") not in CLOSED_STATE_TYPES
            and not node.get("archivedAt") and not node.get("trashed"),
            blocked_by=tuple(blockers),
            comments=comments,
            remote_id=node.get("id"),
            updated_at=_parse_time(node.get("updatedAt")),
        )

    def _ref(self, key: str) -> tuple[str, str]:
        """The issue's id and its team's id (mutations take ids, not identifiers), cached."""
        return self._issue_refs.get(key) or self._read_ref(key)[0]

    def _read_ref(self, key: str) -> tuple[tuple[str, str], str | None]:
        """The issue's id and its team's id, read now (an issue moved to another team keeps its id
        but changes team), with the type of its workflow state."""
        node = self.client.execute("IssueRef", {"id": key}).get("issue")
        if not isinstance(node, dict) or not node.get("id"):
            raise NotFound(f"Linear issue {key} not found")
        ref = (str(node["id"]), str((node.get("team") or {}).get("id") or ""))
        self._issue_refs[key] = ref
        return ref, (node.get("state") or {}).get("type")

    # -- writing ------------------------------------------------------------------------------

    def post_comment(self, key: str, body: str) -> Comment:
        issue_id, _team = self._ref(key)
        data = self.client.execute("CreateComment", {"issueId": issue_id, "body": body})
        return self._created(key, body, data)

    def post_comment_once(self, key: str, body: str, *, ref: str, retry: bool) -> Comment:
        """Create the comment with ``ref`` as its Linear ``id``; on a retry, first read the comment
        of that id, and return it when it is on this issue (an earlier try was stored though its
        answer was lost). With the issue's id known (as after a poll), a first try costs one
        request, a retry two (one when it finds the comment).

        Linear refuses a second comment with an id already used. A create refused all the same
        may be one whose comment an earlier try stored unseen: a sender that died after Linear's
        answer leaves ``retry`` false, and a lost try may land while a retry looks. So on a
        refusal the comment of that id is read, and returned when it is on this issue; else the
        create's error is raised. Linear does not document its wording for an id already taken,
        so this is done for any error Linear answers the create with (one request more, on a
        failure only). A comment of that id on another issue is never taken for ours.
        """
        issue_id, _team = self._ref(key)
        if retry:
            found = self._comment_by_id(ref)
            if found is not None and found[1] == issue_id:
                return found[0]
        try:
            data = self.client.execute("CreateComment", {"issueId": issue_id, "body": body, "id": ref})
        except NotFound:
            raise  # the issue is gone (an id already taken is not a missing entity)
        except ProviderError as exc:
            if exc.status not in ANSWERED_STATUSES or exc.retry_after is not None:
                # no answer (the outbox tries again, and looks then), or a rate limit or refused
                # credentials: nothing that says whether the id is taken
                raise
            found = self._comment_by_id(ref)
            if found is None:
                raise
            comment, on_issue = found
            if on_issue != issue_id:
                raise ProviderError(
                    f"Linear CreateComment failed: the comment id {ref} for {key} is taken by a "
                    "comment of another issue",
                    provider=PROVIDER_ID,
                    status=exc.status,
                    detail=exc.detail,
                ) from None
            self.log.info("Linear comment %s on %s was posted by an earlier try", ref, key)
            return comment
        return self._created(key, body, data)

    def _created(self, key: str, body: str, data: dict[str, Any]) -> Comment:
        """The comment a ``CreateComment`` answer holds."""
        payload = data.get("commentCreate") or {}
        comment = payload.get("comment") or {}
        if not payload.get("success") or not comment.get("id"):
            raise ProviderError(
                f"Linear CreateComment failed: the comment on {key} was not created", provider=PROVIDER_ID
            )
        return _comment(comment, body)

    def _comment_by_id(self, comment_id: str) -> tuple[Comment, str | None] | None:
        """The comment of that id with the id of its issue, or ``None`` when Linear has none."""
        try:
            node = self.client.execute("CommentById", {"id": comment_id}).get("comment")
        except NotFound:
            return None
        if not isinstance(node, dict) or not node.get("id"):
            return None
        issue_id = node.get("issueId")
        return _comment(node, ""), str(issue_id) if issue_id else None

    def set_stage(self, key: str, stage: Stage) -> None:
        if stage is Stage.TRIGGERED:
            raise ProviderError("the orchestrator never sets the trigger itself", provider=PROVIDER_ID)
        if stage is Stage.DONE:
            self.mark_done(key)
            return
        target = STAGE_LABELS.get(stage)  # failed stages: no label, every AI label goes
        for last_try in (False, True):
            node = self.client.execute("IssueLabelsOfIssue", {"id": key}).get("issue")
            if not isinstance(node, dict) or not node.get("id"):
                raise NotFound(f"Linear issue {key} not found")
            issue_id = str(node["id"])
            team_id = str((node.get("team") or {}).get("id") or "")
            self._issue_refs[key] = (issue_id, team_id)
            # label id -> (folded name, retired): a retired label stays on the issues that carry it
            current = {
                str(label["id"]): (str(label["name"]).casefold(), bool(label.get("retiredAt")))
                for label in _nodes(node.get("labels"))
                if label.get("name") and label.get("id")
            }
            target_id = self._target_label(team_id, target, current) if target is not None else None
            # Only our own labels are touched (added/removed ids, never the full list): a label a
            # person adds at the same moment survives. Ours by name, or by the id cached for one of
            # our names (a person renamed it: "AI Working (old)" stays ours to take off). A retired
            # label of the stage's name goes too, when an active one shows the stage instead.
            known = set(self._ours.get(team_id, ()))
            removed = [
                label_id
                for label_id, (name, _retired) in current.items()
                if (name in _AI_FOLDED or label_id in known) and label_id != target_id
            ]
            added = [target_id] if target_id is not None and target_id not in current else []
            if not added and not removed:
                return  # already there: setting a stage is idempotent and costs one read
            try:
                data = self.client.execute(
                    "UpdateIssueLabels", {"id": issue_id, "added": added, "removed": removed}
                )
            except NotFound:
                if last_try:
                    raise
                # The label id we cached may be gone: a person deleted the label in Linear (and
                # perhaps created it again). Forget the team's ids and try once more with the
                # issue's labels and ours looked up afresh.
                self.log.info("Linear refused a label id for %s: looking the team's labels up again", key)
                self._forget_labels(team_id)
                continue
            except ProviderError as exc:
                answered = exc.status in ANSWERED_STATUSES and exc.retry_after is None
                if last_try or not added or not answered:
                    raise
                # The label we cached may have been retired since: Linear applies a retired label
                # to no issue (in words it does not document, so any refusal of the update counts).
                # Look the team's labels up again, which restores it, and try once more.
                self.log.info("Linear refused the labels of %s (%s): looking the team's labels up again",
                              key, exc.message)
                self._forget_labels(team_id)
                continue
            if not (data.get("issueUpdate") or {}).get("success"):
                raise ProviderError(
                    f"Linear UpdateIssueLabels failed: the labels of {key} were not changed",
                    provider=PROVIDER_ID,
                )
            labels = (((data.get("issueUpdate") or {}).get("issue") or {}).get("labels")) or {}
            now = {str(label.get("name") or "").casefold() for label in _nodes(labels)}
            if target is not None and target.casefold() not in now and not last_try:
                # the id cached for the label is now another name's (a person renamed the label):
                # the team's labels are looked up again, and the label made anew when it is gone
                self.log.info("Linear label %r of team %s was renamed: looking the team's labels up again",
                              target, team_id)
                self._forget_labels(team_id)
                continue
            return

    def _target_label(self, team_id: str, name: str, current: Mapping[str, tuple[str, bool]]) -> str:
        """The id of the label ``name`` that shows the stage on an issue carrying ``current``
        (label id -> (folded name, retired)): an active one of that name already on it, else the
        team's (see :meth:`_label_id`)."""
        folded = name.casefold()
        on_issue = [label_id for label_id, (n, retired) in current.items() if n == folded and not retired]
        if on_issue:
            return on_issue[0]
        if self._labels.get((team_id, folded)) in {i for i, (n, _retired) in current.items() if n == folded}:
            # the id cached for the name is on the issue, retired since: look the name up again
            self._labels.pop((team_id, folded), None)
        return self._label_id(team_id, name)

    def _label_id(self, team_id: str, name: str) -> str:
        """The id of an active label ``name`` usable in the team (a team label or a workspace
        label): looked up (a retired one is restored when no active one exists), else created in
        the team on first use; then cached."""
        cache_key = (team_id, name.casefold())
        # read with get(): another thread may forget the team's labels at any moment
        label_id = self._labels.get(cache_key)
        if label_id is None:
            label_id = self._find_label(team_id, name)
        if label_id is None:
            label_id = self._create_label(team_id, name)
        return label_id

    def _find_label(self, team_id: str, name: str) -> str | None:
        """The id of the label ``name`` the team can use, looked up now: an active one, else a
        retired one, restored (Linear applies a retired label to no issue). ``None`` when the team
        has neither."""
        active, retired = self._load_labels(team_id, name)
        folded = name.casefold()
        if folded in active:
            return active[folded]
        if folded in retired:
            return self._restore_label(team_id, name, retired[folded])
        return None

    def _forget_labels(self, team_id: str) -> None:
        """Drop the cached label ids of the team (list() first: other threads may add some)."""
        for cache_key in [k for k in list(self._labels) if k[0] == team_id]:
            self._labels.pop(cache_key, None)

    def _load_labels(self, team_id: str, name: str) -> tuple[dict[str, str], dict[str, str]]:
        """Cache the team's and the workspace's active labels named like ``name`` or any AI label;
        return their ids by folded name, and those of the retired ones of these names (which can
        be applied to no issue, so they are not cached)."""
        names = sorted({name, *AI_LABELS}, key=str.casefold)
        label_filter = {
            "and": [
                # Linear compares label names ignoring case, so "ai-working" is the same label
                {"or": [{"name": {"eqIgnoreCase": n}} for n in names]},
                {"or": [{"team": {"id": {"eq": team_id}}}, {"team": {"null": True}}]},
            ]
        }
        data = self.client.execute("LabelsByName", {"filter": label_filter})
        # (team's, workspace's) labels by folded name, the active ones and the retired ones
        found: tuple[dict[str, str], dict[str, str]] = ({}, {})
        retired: tuple[dict[str, str], dict[str, str]] = ({}, {})
        for label in _nodes(data.get("issueLabels")):
            if label.get("isGroup") or not label.get("id") or not label.get("name"):
                continue  # a label group cannot be put on an issue
            owner = (label.get("team") or {}).get("id")
            if owner not in (team_id, None):
                continue
            kept = retired if label.get("retiredAt") else found
            kept[owner is None].setdefault(str(label["name"]).casefold(), str(label["id"]))
        # a team label of the same name wins over the workspace one
        active = {**found[1], **found[0]}
        for folded, label_id in active.items():
            self._cache_label(team_id, folded, label_id)
        return active, {**retired[1], **retired[0]}

    def _create_label(self, team_id: str, name: str) -> str:
        if not team_id:
            raise ProviderError(
                f"Linear: cannot create label {name!r}: the issue's team is unknown", provider=PROVIDER_ID
            )
        try:
            created = self.client.execute(
                "CreateLabel", {"name": name, "teamId": team_id, "color": LABEL_COLORS.get(name)}
            )
        except ProviderError:
            # Another orchestrator process (or a person) may have created it since we looked:
            # use that one rather than fail.
            existing = self._find_label(team_id, name)
            if existing is not None:
                return existing
            raise
        payload = created.get("issueLabelCreate") or {}
        label = payload.get("issueLabel") or {}
        if not payload.get("success") or not label.get("id"):
            raise ProviderError(
                f"Linear CreateLabel failed: label {name!r} was not created", provider=PROVIDER_ID
            )
        self.log.info("created Linear label %r in team %s", name, team_id)
        self._cache_label(team_id, name.casefold(), str(label["id"]))
        return str(label["id"])

    def _restore_label(self, team_id: str, name: str, label_id: str) -> str | None:
        """Restore the retired label ``label_id`` (``name``, which the team has no active label
        of) and cache it; ``None`` when Linear no longer has it (deleted meanwhile)."""
        try:
            data = self.client.execute("RestoreLabel", {"id": label_id})
        except NotFound:
            return None
        except ProviderError as exc:
            if exc.retry_after is not None:
                raise
            raise ProviderError(
                f"Linear: label {name!r} is retired and could not be restored ({exc.message}): restore "
                "it in Linear, or delete it so that it is created anew",
                provider=PROVIDER_ID,
                status=exc.status,
                detail=exc.detail,
            ) from None
        payload = data.get("issueLabelRestore") or {}
        label = payload.get("issueLabel") or {}
        if not payload.get("success") or label.get("retiredAt"):
            raise ProviderError(
                f"Linear RestoreLabel failed: label {name!r} is still retired", provider=PROVIDER_ID
            )
        self.log.warning("restored the retired Linear label %r (%s) to use it in team %s",
                         name, label_id, team_id)
        self._cache_label(team_id, name.casefold(), label_id)
        return label_id

    def _cache_label(self, team_id: str, folded: str, label_id: str) -> None:
        self._labels[(team_id, folded)] = label_id
        if folded in _AI_FOLDED:
            self._ours.setdefault(team_id, set()).add(label_id)

    def mark_done(self, key: str) -> None:
        # workflow states belong to a team, so the issue's current team matters here
        (issue_id, team_id), state_type = self._read_ref(key)
        if state_type == DONE_STATE_TYPE:
            # already done, perhaps in a later completed state than the first ("Released", set by
            # Linear's GitHub integration on the merge): moving it back to "Done" would undo that
            return
        for last_try in (False, True):
            state_id = self._done_state(team_id)
            try:
                data = self.client.execute("SetIssueState", {"id": issue_id, "stateId": state_id})
            except NotFound:
                if last_try:
                    raise
                # the cached state may have been deleted in Linear: look the team's up again
                self.log.info("Linear refused the done state of team %s: looking it up again", team_id)
                self._done_states.pop(team_id, None)
                continue
            if not (data.get("issueUpdate") or {}).get("success"):
                raise ProviderError(
                    f"Linear SetIssueState failed: {key} was not moved to done", provider=PROVIDER_ID
                )
            return

    def _done_state(self, team_id: str) -> str:
        """The id of the team's first ``completed`` workflow state (its usual "Done"), cached."""
        state_id = self._done_states.get(team_id)
        if state_id is None:
            team = self.client.execute("TeamDoneStates", {"teamId": team_id}).get("team") or {}
            states = [s for s in _nodes(team.get("states")) if s.get("type") == "completed" and s.get("id")]
            if not states:
                raise ProviderError(
                    f"Linear: team {team.get('key') or team_id} has no completed workflow state",
                    provider=PROVIDER_ID,
                )
            # the first "completed" state by position is the team's usual "Done"
            state_id = str(min(states, key=lambda s: float(s.get("position") or 0))["id"])
            self._done_states[team_id] = state_id
        return state_id

    # -- operator checks ----------------------------------------------------------------------

    def check(self, mappings: Sequence[MappingView]) -> Sequence[CheckResult]:
        """``aiimpl check``: the credentials, then each mapped team (see :meth:`check_setup`), all
        read in one request (per :data:`SETUP_CHECK_TEAMS` teams). A refused key is a failed
        ``credentials`` line, not an exception."""
        keys = sorted({m.team_key for m in mappings})
        try:
            report = self.check_setup(keys)
        except ProviderError as exc:
            if exc.status not in (401, 403):
                raise
            return [CheckResult("credentials", False, exc.message)]
        viewer = report["viewer"]
        who = viewer.get("name") or viewer.get("email") or "an unnamed user"
        results = [CheckResult("credentials", True, f"signed in as {who}")]
        for key in keys:
            entry = report["teams"][key]
            if not entry["found"] or entry["problems"]:
                prefix = f"{entry['name']}: " if entry.get("name") else ""
                results.append(CheckResult(f"team {key}", False, prefix + "; ".join(entry["problems"])))
                continue
            # (Linear's key too, where the mapping spells it in another case)
            name = entry["name"] if entry["key"] == key else f"{entry['name']} (Linear key {entry['key']})"
            detail = f"{name}: trigger label {TRIGGER_LABEL} found; done state {entry['done']}"
            if entry["missing"]:
                detail += f"; stage labels created on first use: {', '.join(entry['missing'])}"
            if entry["retired"]:
                detail += f"; retired stage labels restored on first use: {', '.join(entry['retired'])}"
            results.append(CheckResult(f"team {key}", True, detail))
        return results

    def check_setup(self, team_keys: Sequence[str]) -> dict[str, Any]:
        """Check the credentials and each team: it exists, has a ``completed`` workflow state, and
        can use the trigger label (its own or the workspace's) -- in one request per
        :data:`SETUP_CHECK_TEAMS` teams.

        Missing stage labels are reported but are not a problem: they are created on first use,
        and those the team has only retired are restored then. The trigger label is never created
        nor restored (a person adds it): without an active one nothing is triggered.
        Returns ``{"ok", "viewer", "teams": {key: {"found", "name", "done", "labels", "missing",
        "retired", "problems"}}}``; ``labels`` lists the AI labels the team can use (active ones),
        ``missing`` the stage labels it does not have yet, ``retired`` those it has only retired.
        """
        keys = sorted(set(team_keys))
        viewer: dict[str, Any] = {}
        teams: dict[str, dict[str, Any]] = {}
        labels: list[dict[str, Any]] = []
        # a few teams per request: the query reads one page of teams and one of labels, and the
        # labels of many teams would not fit on it (those left off would be reported missing)
        chunks = [keys[i : i + SETUP_CHECK_TEAMS] for i in range(0, len(keys), SETUP_CHECK_TEAMS)]
        for chunk in chunks or [[]]:
            # A mapping's key may be in another case than Linear's (``eng`` for ``ENG``), as the
            # listing and the webhook accept it: compared ignoring case (the schema has no ``in``
            # that does), and the teams found are matched to the keys asked for the same way.
            # No key asked for: a filter that matches no team, as ``in: []`` does.
            same_key = [{"key": {"eqIgnoreCase": key}} for key in chunk] or [{"key": {"in": []}}]
            label_filter = {
                "and": [
                    {"or": [{"name": {"eqIgnoreCase": n}} for n in AI_LABELS]},
                    # only these teams' labels and the workspace's: other teams' copies of our
                    # labels cannot fill the page and hide the ones that count
                    {"or": [*({"team": f} for f in same_key), {"team": {"null": True}}]},
                ]
            }
            data = self.client.execute(
                "SetupCheck", {"teamFilter": {"or": same_key}, "labelFilter": label_filter}
            )
            viewer = viewer or data.get("viewer") or {}
            teams.update((str(t.get("key")).casefold(), t) for t in _nodes(data.get("teams")))
            labels.extend(
                label
                for label in _nodes(data.get("issueLabels"))
                if label.get("name") and not label.get("isGroup")
            )
        report: dict[str, Any] = {"ok": True, "viewer": viewer, "teams": {}}
        for key in keys:
            team = teams.get(key.casefold())
            if team is None:
                report["teams"][key] = {"found": False, "problems": [f"no Linear team with key {key}"]}
                report["ok"] = False
                continue
            done = sorted(_nodes(team.get("states")), key=lambda s: float(s.get("position") or 0))
            own = [label for label in labels if (label.get("team") or {}).get("key") in (team["key"], None)]
            # a retired label is still listed but can be added to no issue
            usable = {str(label["name"]).casefold() for label in own if not label.get("retiredAt")}
            retired = {str(label["name"]).casefold() for label in own if label.get("retiredAt")} - usable
            problems = []
            if TRIGGER_LABEL.casefold() in retired:
                problems.append(
                    f"label {TRIGGER_LABEL} is retired: restore it in Linear; it is the trigger, and an "
                    "issue carrying a retired one is not dispatched"
                )
            elif TRIGGER_LABEL.casefold() not in usable:
                problems.append(
                    f"label {TRIGGER_LABEL} not found: add it in Linear "
                    f"(a workspace label or a label of team {key}); it is the trigger"
                )
            if not done:
                problems.append("no workflow state of type completed (needed when a PR merges)")
            report["teams"][key] = {
                "found": True,
                "key": team.get("key"),
                "name": team.get("name"),
                "done": done[0].get("name") if done else None,
                "labels": [n for n in AI_LABELS if n.casefold() in usable],
                "missing": [n for n in STAGE_LABELS.values() if n.casefold() not in usable | retired],
                "retired": [n for n in STAGE_LABELS.values() if n.casefold() in retired],
                "problems": problems,
            }
            report["ok"] = report["ok"] and not problems
        return report
