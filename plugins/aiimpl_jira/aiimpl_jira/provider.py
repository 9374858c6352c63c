"""Ticketing provider ``jira``: Jira Cloud through REST API v3.

The trigger is the status ``Ready``; each lifecycle stage is a status (the reference's "Issue
lifecycle" table). Stages are set by finding the workflow transition whose target status has
the stage's name, so the workflow must offer it: when it does not, the error names the gap. A
transition's screen may require fields: a resolution is chosen, another field keeps the value the
issue has, else takes its default.
Comments go out as Atlassian Document Format rendered from our Markdown; each one the outbox
queues carries its identity in a comment property, so a retry finds a copy whose answer was lost.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from aiimpl_core.errors import NotFound, ProviderConfigError, ProviderError
from aiimpl_core.http import url_setting_problem
from aiimpl_core.providers import TicketingProvider
from aiimpl_core.types import BlockingLink, CheckResult, Comment, Stage, TrackerIssue, TriggeredPage

from .adf import FENCE, adf_to_markdown, markdown_to_adf
from .client import ISSUE_FIELDS, JiraClient, search_page_is_last
from .config import (
    CONFIG_VARS,
    DONE_CATEGORY,
    STAGE_STATUS,
    STATUS_STAGE,
    TRIGGER_STATUS,
    JiraSettings,
    TicketingSettingsSchema,
    clause_problem,
    ticketing_errors,
)

if TYPE_CHECKING:
    from aiimpl_core.types import MappingView


def jql_string(value: str) -> str:
    """A JQL string literal (double-quoted, with ``\\`` and ``"`` escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: Jira's refusal of a search naming a project it does not show
_NO_SUCH_PROJECT = re.compile(r"^The value '(.+)' does not exist for the field 'project'\.$")


def unknown_projects(exc: ProviderError, projects: Sequence[str]) -> list[str]:
    """The projects of ``projects`` that Jira's refusal of a search says it does not know (or does
    not show to the account): its ``errorMessages``, one a project."""
    detail = exc.detail if isinstance(exc.detail, Mapping) else {}
    named = set()
    for message in detail.get("errorMessages") or ():
        match = _NO_SUCH_PROJECT.match(str(message))
        if match:
            named.add(match.group(1).casefold())
    return [p for p in projects if p.casefold() in named]


def trigger_jql(projects: Sequence[str], clauses: Mapping[str, str] | None = None) -> str:
    """The search for triggered issues: status ``Ready`` in ``projects``, each with its own clause.

    Projects without a clause share one ``project in (...)``; the order is stable (by creation)
    because token pagination walks one consistent ordering.
    """
    clauses = clauses or {}
    plain = [p for p in projects if not clauses.get(p)]
    parts = []
    if plain:
        parts.append(f"project in ({', '.join(jql_string(p) for p in plain)})")
    for project in projects:
        clause = clauses.get(project)
        if clause:
            parts.append(f"(project = {jql_string(project)} AND ({clause}))")
    scope = parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"
    return f"status = {jql_string(TRIGGER_STATUS)} AND {scope} ORDER BY created ASC, key ASC"


#: The statuses the workflow must have: the trigger and every stage's (:data:`STAGE_STATUS`).
REQUIRED_STATUSES: tuple[str, ...] = tuple(STAGE_STATUS.values())

#: Jira refuses comments longer than 32,767 characters; keep a margin for the notice.
MAX_COMMENT_CHARS = 32_000
TRUNCATED_NOTICE = "\n\n… (truncated: the full text is in the orchestrator's job details)"


def utf16_len(text: str) -> int:
    """The length Jira (Java) counts: UTF-16 code units, two for a character above U+FFFF."""
    return len(text.encode("utf-16-le")) // 2


def _utf16_prefix(text: str, units: int) -> str:
    """The longest start of ``text`` of at most ``units`` UTF-16 code units, never half a character."""
    if units <= 0:
        return ""
    encoded = text.encode("utf-16-le")[: 2 * units]
    if len(encoded) >= 2 and 0xD800 <= int.from_bytes(encoded[-2:], "little") <= 0xDBFF:
        encoded = encoded[:-2]  # the high half of a surrogate pair: its character does not fit
    return encoded.decode("utf-16-le")


def _open_fence(text: str) -> str | None:
    """The opening fence (three or more backticks or tildes) of the code block ``text`` ends
    inside, with the spaces it is indented by, or ``None``.

    Read as :func:`.adf.markdown_to_adf` reads it: a block closes only at a bare fence of its own
    character at least as long as its opening one, so three-backtick lines inside a block opened
    with four are code.
    """
    opener: re.Match[str] | None = None
    for line in text.split("\n"):
        fence = FENCE.match(line)
        if fence is None:
            continue
        marker = fence.group("fence")
        if opener is None:
            opener = fence
        elif (
            marker[0] == opener.group("fence")[0]
            and len(marker) >= len(opener.group("fence"))
            and not fence.group("lang")
        ):
            opener = None
    return None if opener is None else opener.group("indent") + opener.group("fence")


def fit_comment(body: str, limit: int = MAX_COMMENT_CHARS) -> str:
    """``body`` cut to Jira's comment size, ending with a notice when it was cut.

    Sizes count UTF-16 code units, as Jira does (an emoji counts two), and a cut never splits a
    character. A cut inside a fenced code block closes it with its own fence, indented as its
    opening one (in a list item, a fence at the line's start would end the item and open a new
    block), so the notice shows as text.
    """
    if utf16_len(body) <= limit:
        return body
    budget = limit - utf16_len(TRUNCATED_NOTICE)
    room = 0  # what the closing fence takes, its indentation included
    while True:
        head = _utf16_prefix(body, budget - room)
        opener = _open_fence(head)
        closing = "" if opener is None else "\n" + opener
        if len(closing) <= room:
            return head + closing + TRUNCATED_NOTICE
        room = len(closing)


#: The comment property that tags each comment the outbox posts with its identity (``{"ref": …}``).
REF_PROPERTY = "aiimpl.comment"


def carries_ref(raw: Mapping[str, Any], ref: str) -> bool:
    """Whether a comment (as listed with ``expand=properties``) carries :data:`REF_PROPERTY` ``ref``."""
    for prop in raw.get("properties") or ():
        if isinstance(prop, Mapping) and prop.get("key") == REF_PROPERTY:
            value = prop.get("value")
            if isinstance(value, Mapping) and value.get("ref") == ref:
                return True
    return False


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":  # Jira's +0000 offsets
        text = f"{text[:-2]}:{text[-2:]}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _status(fields: Mapping[str, Any]) -> Mapping[str, Any]:
    status = fields.get("status")
    return status if isinstance(status, Mapping) else {}


def _category(status: Mapping[str, Any]) -> str | None:
    category = status.get("statusCategory")
    return str(category.get("key")) if isinstance(category, Mapping) and category.get("key") else None


def blocking_links(fields: Mapping[str, Any]) -> tuple[BlockingLink, ...]:
    """Issues that block this one: links of the "Blocks" type read inward ("is blocked by").

    In an issue's ``issuelinks`` the *other* issue is ``inwardIssue`` when the link reads with the
    type's inward description from this issue's side. A blocker is open until its status is in
    the done category.
    """
    out = []
    for link in fields.get("issuelinks") or ():
        if not isinstance(link, Mapping):
            continue
        link_type = link.get("type") or {}
        is_blocks = (
            str(link_type.get("name", "")).casefold() == "blocks"
            or str(link_type.get("inward", "")).casefold() == "is blocked by"
        )
        other = link.get("inwardIssue")
        if not is_blocks or not isinstance(other, Mapping) or not other.get("key"):
            continue
        other_fields = other.get("fields") or {}
        out.append(
            BlockingLink(
                key=str(other["key"]),
                title=str(other_fields.get("summary") or ""),
                open=_category(_status(other_fields)) != DONE_CATEGORY,
            )
        )
    return tuple(out)


#: The resolution set by a transition whose screen requires one, in order of preference (else
#: the first one Jira allows).
PREFERRED_RESOLUTIONS: tuple[str, ...] = ("Done", "Fixed")


def _describe_transition(key: str, current: str, transition: Mapping[str, Any]) -> str:
    to = transition.get("to") if isinstance(transition.get("to"), Mapping) else {}
    name = transition.get("name") or transition.get("id")
    return f"the transition '{name}' of {key} (from '{current}' to '{to.get('name', '')}')"


def _reference(value: Any) -> Any:
    """How a transition request names one of a field's allowed values: by id, else by name or value."""
    if isinstance(value, Mapping):
        for attribute in ("id", "name", "value", "key", "accountId"):
            if value.get(attribute) not in (None, ""):
                return {attribute: value[attribute]}
        return dict(value)
    return value


def _field_value(field_id: str, meta: Mapping[str, Any]) -> Any:
    """The value the plugin gives a required screen field, or ``None`` when it has none to give."""
    allowed = [v for v in meta.get("allowedValues") or () if v not in (None, "")]
    schema = meta.get("schema") if isinstance(meta.get("schema"), Mapping) else {}
    if allowed and "resolution" in (field_id, schema.get("system")):
        def name_of(value: Any) -> str:
            return str(value.get("name", "") if isinstance(value, Mapping) else value).casefold()

        chosen = next(
            (v for wanted in PREFERRED_RESOLUTIONS for v in allowed if name_of(v) == wanted.casefold()),
            allowed[0],
        )
        return _reference(chosen)
    default = meta.get("defaultValue")
    if default in (None, "", [], {}):
        return None
    if isinstance(default, list):
        return [_reference(v) for v in default]
    value = _reference(default)
    return [value] if schema.get("type") == "array" else value


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _needs_current_value(field_id: str, meta: Any) -> bool:
    """Whether the issue's value of a screen field is read before the transition: a required field
    other than the resolution (which the plugin always chooses)."""
    if not isinstance(meta, Mapping) or not meta.get("required"):
        return False
    schema = meta.get("schema") if isinstance(meta.get("schema"), Mapping) else {}
    return "resolution" not in (field_id, schema.get("system"))


def screen_values(
    screen: Mapping[str, Any], transition: str, current: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``fields`` of a transition request: a value for each required field of the screen that
    the issue does not already have.

    A resolution takes "Done" (else "Fixed", else the first allowed). Another required field that
    has a value on the issue (``current``) is left out: Jira checks a required field against the
    issue after the transition, and a field left out keeps its value (Summary, Reporter, a custom
    field set earlier all pass), whereas sending the default would overwrite it. An empty one takes
    its default value. An empty required field without a default cannot be filled in by the
    orchestrator: the error (status 400, as Jira's own refusal, so the outbox gives up on it) names
    the field and the transition, for a person to fill it in or fix the screen.

    :param screen: the transition's ``fields`` (field id → ``FieldMetadata``).
    :param transition: how the error names the transition.
    :param current: the issue's ``fields`` as read for the screen's required fields; a field not
        in it counts as empty.
    """
    current = current or {}
    values: dict[str, Any] = {}
    for field_id, meta in screen.items():
        if not isinstance(meta, Mapping) or not meta.get("required"):
            continue
        if _needs_current_value(str(field_id), meta) and not _is_empty(current.get(str(field_id))):
            continue
        value = _field_value(str(field_id), meta)
        if value is None:
            raise ProviderError(
                f"{transition} requires the field '{meta.get('name') or field_id}' ({field_id}), which "
                "is empty on the issue and has no default value to fill in: fill it in on the issue, "
                "give the field a default value or take it off the transition's screen in Jira",
                provider="jira",
                status=400,
            )
        values[str(field_id)] = value
    return values


class JiraProvider(TicketingProvider):
    """Jira Cloud: trigger by the ``Ready`` status, stages as statuses, ADF comments."""

    id = "jira"
    display_name = "Jira"
    trigger_hint = f"move the issue to `{TRIGGER_STATUS}`"
    setup_hint = ("set AIIMPL_JIRA_URL, and AIIMPL_JIRA_EMAIL with AIIMPL_JIRA_API_TOKEN or "
                  "AIIMPL_JIRA_BEARER_TOKEN")
    config_vars = CONFIG_VARS
    supports_webhooks = True
    settings_schema: ClassVar[type[TicketingSettingsSchema]] = TicketingSettingsSchema

    #: issues per search page (Jira allows up to 5000 with few fields; 100 keeps answers small)
    page_size: ClassVar[int] = 100
    #: the newest comments a retry of :meth:`post_comment_once` reads first, in one page, when it
    #: looks for its earlier copy (it reads on, a page of 100 at a time, until it finds it)
    retry_lookback: ClassVar[int] = 50

    _client: JiraClient | None = None

    @classmethod
    def settings_problem(cls, config: Mapping[str, Any]) -> str | None:
        return url_setting_problem(config, "AIIMPL_JIRA_URL")

    @property
    def settings(self) -> JiraSettings:
        return JiraSettings.from_config(self.context.config)

    def is_configured(self) -> bool:
        return self.settings.configured

    @property
    def client(self) -> JiraClient:
        self.require_configured()
        if self._client is None:
            self._client = JiraClient(self.settings, self.context.http)
        return self._client

    @property
    def site(self) -> str:
        """Where issue links lead: the site, which the API's base is not with OAuth 2.0."""
        return self.settings.site_url or self.settings.url or ""

    # -- reading ------------------------------------------------------------------------------

    def _mappings(self) -> list[MappingView]:
        source = getattr(self.context, "mappings", None)
        return list(source()) if source is not None else []

    def _mapping_clauses(self, mappings: Sequence[MappingView] | None = None) -> dict[str, str]:
        """The optional JQL clause of each Jira mapping (``ticketing.jql``), by project key."""
        clauses = {}
        for mapping in self._mappings() if mappings is None else mappings:
            ticketing = mapping.ticketing or {}
            if ticketing.get("provider") not in (None, self.id):
                continue
            jql = ticketing.get("jql")
            if isinstance(jql, str) and jql.strip():
                clauses[mapping.team_key] = jql.strip()
        return clauses

    def searched_projects(self, teams: Sequence[str]) -> list[str]:
        """The mapped projects to search, limited to ``AIIMPL_JIRA_PROJECTS`` when that is set."""
        allowed = {p.upper() for p in self.settings.projects}
        seen: dict[str, None] = {}
        for team in teams:
            if team and (not allowed or team.upper() in allowed):
                seen.setdefault(team, None)
        return list(seen)

    def iter_triggered(self, teams: Sequence[str]) -> Iterator[TriggeredPage]:
        projects = self.searched_projects(teams)
        if not projects:
            yield TriggeredPage((), complete=True)
            return
        clauses = {p: c for p, c in self._mapping_clauses().items() if p in projects}
        # a clause saved before the check was what it is (or written to the database) that would
        # break out of its parentheses and widen the search: its project is left out, not widened
        problems = {p: problem for p, c in clauses.items() if (problem := clause_problem(c))}
        for project, problem in problems.items():
            self.log.warning("the JQL clause of mapping %s (ticketing.jql) %s: its issues are not polled; "
                             "fix the clause", project, problem)
        left_out = list(problems)
        while True:
            projects = [p for p in projects if p not in left_out]
            clauses = {p: c for p, c in clauses.items() if p in projects}
            if not projects:
                yield TriggeredPage((), complete=False)
                return
            jql = trigger_jql(projects, clauses)
            pages = self.client.search(jql, fields=ISSUE_FIELDS, max_results=self.page_size)
            try:
                page = next(pages)
                break
            except StopIteration:
                return
            except ProviderError as exc:
                gone = unknown_projects(exc, projects) if exc.status == 400 else []
                if not gone:
                    self._raise_for_bad_clause(clauses, exc)
                    raise
            # one mapping naming a project Jira does not show (deleted, renamed, or that the
            # account may not browse) made Jira refuse the whole search: every project waited
            left_out += gone
            self.log.warning(
                "Jira does not know the project of the mappings %s, or does not show it to this account "
                "(deleted, renamed, not browsable): their issues are not polled, the others are; fix or "
                "delete those mappings (`aiimpl jira check` names them)", ", ".join(gone),
            )
        while True:
            issues = tuple(self.to_issue(raw) for raw in page.get("issues") or ())
            last = search_page_is_last(page)  # (a page saying more follow without a token raised)
            # (a listing that left projects out is no account of which issues carry the trigger)
            yield TriggeredPage(issues, complete=last and not left_out)
            if last:
                return
            try:
                page = next(pages)
            except StopIteration:
                return
            except ProviderError as exc:
                self._raise_for_bad_clause(clauses, exc)
                raise

    def _clause_errors(self, clauses: Mapping[str, str]) -> dict[str, list[str]]:
        """Jira's parser's errors for each mapping's ``ticketing.jql`` (by project), in one call."""
        parsed = self.client.parse_jql(list(clauses.values()))
        return {
            project: [str(e) for e in (parsed[i].get("errors") or ())] if i < len(parsed) else []
            for i, project in enumerate(clauses)
        }

    def _raise_for_bad_clause(self, clauses: Mapping[str, str], exc: ProviderError) -> None:
        """Name the mapping whose ``ticketing.jql`` made Jira refuse the whole search (a 400), when
        one of ``clauses`` did; else return, for ``exc`` to be raised as it is."""
        if exc.status != 400 or not clauses:
            return
        for project, errors in self._clause_errors(clauses).items():
            if errors:
                raise ProviderError(
                    f"the JQL clause of mapping {project} (ticketing.jql) is invalid: {'; '.join(errors)}",
                    provider=self.id,
                    status=400,
                ) from exc

    def _in_trigger_scope(self, issue: TrackerIssue) -> bool:
        """Whether the poll's search would list this ``Ready`` issue, so both paths agree on the trigger.

        Its project must be a mapped one that is searched (``AIIMPL_JIRA_PROJECTS``), and the issue
        must match the mapping's ``ticketing.jql``: one search (``key = … AND (<clause>)``) when the
        mapping has a clause, no request otherwise.
        """
        mappings = self._mappings()
        mapped = [m.team_key for m in mappings if (m.ticketing or {}).get("provider") == self.id]
        project = next(
            (p for p in self.searched_projects(mapped) if p.upper() == issue.team_key.upper()), None
        )
        if project is None:
            return False
        clause = self._mapping_clauses(mappings).get(project)
        if not clause:
            return True
        problem = clause_problem(clause)
        if problem:  # as in the poll: out of scope, never a search it would widen
            self.log.warning("the JQL clause of mapping %s (ticketing.jql) %s: %s is not taken as "
                             "triggered; fix the clause", project, problem, issue.key)
            return False
        issue_id = issue.remote_id or ""
        pages = self.client.search(
            f"key = {jql_string(issue.key)} AND ({clause})",
            fields=("id",),
            max_results=1,
            # a webhook reads the issue right after a change, which the search index may lag
            reconcile_issues=[int(issue_id)] if issue_id.isdigit() else (),
        )
        try:
            # Jira may answer a page with fewer issues than asked, none even, and more to follow:
            # the issue is matched when any page holds it, not only the first
            return any(page.get("issues") for page in pages)
        except ProviderError as exc:
            self._raise_for_bad_clause({project: clause}, exc)
            raise
        finally:
            pages.close()

    def to_issue(self, raw: Mapping[str, Any], comments: Sequence[Mapping[str, Any]] = ()) -> TrackerIssue:
        """A :class:`TrackerIssue` from an ``IssueBean``; ``triggered`` reads the status alone."""
        key = str(raw.get("key") or "")
        fields = raw.get("fields") or {}
        status = _status(fields)
        status_name = str(status.get("name") or "")
        project = fields.get("project") if isinstance(fields.get("project"), Mapping) else {}
        return TrackerIssue(
            key=key,
            team_key=str(project.get("key") or self.team_of(key)),
            title=str(fields.get("summary") or ""),
            provider=self.id,
            description=adf_to_markdown(fields.get("description")),
            url=f"{self.site}/browse/{key}" if self.site else None,
            state=status_name or None,
            labels=tuple(str(label) for label in fields.get("labels") or ()),
            stage=STATUS_STAGE.get(status_name.casefold()),
            triggered=status_name.casefold() == TRIGGER_STATUS.casefold(),
            blocked_by=blocking_links(fields),
            comments=tuple(self.to_comment(c) for c in comments),
            remote_id=str(raw["id"]) if raw.get("id") else None,
            updated_at=_parse_time(fields.get("updated")),
        )

    @staticmethod
    def to_comment(raw: Mapping[str, Any]) -> Comment:
        author = raw.get("author") if isinstance(raw.get("author"), Mapping) else {}
        return Comment(
            body=adf_to_markdown(raw.get("body")),
            author=str(author.get("displayName")) if author.get("displayName") else None,
            created_at=_parse_time(raw.get("created")),
            id=str(raw["id"]) if raw.get("id") else None,
        )

    def get_issue(self, key: str) -> TrackerIssue:
        """The issue, ``triggered`` only when in ``Ready`` *and* in the poll's scope.

        The issue is returned whatever its scope (the planning context reads it too); only the
        trigger is narrowed, so a webhook dispatches no issue that the poll would skip.
        """
        raw = self.client.get_issue(key, fields=(*ISSUE_FIELDS, "comment"))
        embedded = (raw.get("fields") or {}).get("comment")
        page: Mapping[str, Any] = embedded if isinstance(embedded, Mapping) else {}
        comments = list(page.get("comments") or [])
        total = page.get("total")
        # The issue carries the first page of comments only; fetch them all when there are more, or
        # when the page does not say how many there are (taken for all, it lost the others).
        if not isinstance(total, int) or isinstance(total, bool) or total > len(comments):
            comments = self.client.comments(key)
        issue = self.to_issue(raw, comments)
        if issue.triggered and not self._in_trigger_scope(issue):
            issue = replace(issue, triggered=False)
        return issue

    # -- writing ------------------------------------------------------------------------------

    def post_comment(self, key: str, body: str) -> Comment:
        return self._posted(body, self.client.add_comment(key, markdown_to_adf(fit_comment(body))))

    def post_comment_once(self, key: str, body: str, *, ref: str, retry: bool) -> Comment:
        """Post a queued comment tagged with the comment property :data:`REF_PROPERTY`
        (``{"ref": ref}``), in the one request of a first try.

        A retry first looks for the comment that carries ``ref`` among the issue's comments,
        newest first with their properties, and returns it: a try whose answer was lost (a
        timeout, a proxy's 502) may have been stored. Only when none does is it posted. The
        outbox retries seconds to an hour apart and holds the issue's later items back meanwhile,
        so the copy is nearly always among the :attr:`retry_lookback` newest, read in one page;
        when it is not, the older pages are read too (Jira Cloud holds at most 5,000 comments per
        issue), so a copy many comments have pushed down is found all the same.
        """
        if retry:
            found = next(
                (raw for raw in self.client.comments_newest_first(key, first_page=self.retry_lookback)
                 if carries_ref(raw, ref)),
                None,
            )
            if found is not None:
                self.log.info("comment %s on %s was stored by an earlier try; not posted again", ref, key)
                return self._posted(body, found)
        created = self.client.add_comment(
            key, markdown_to_adf(fit_comment(body)), properties={REF_PROPERTY: {"ref": ref}}
        )
        return self._posted(body, created)

    @staticmethod
    def _posted(body: str, raw: Mapping[str, Any]) -> Comment:
        return Comment(
            body=body,
            id=str(raw.get("id")) if raw.get("id") else None,
            created_at=_parse_time(raw.get("created")),
        )

    def _status_and_transitions(self, key: str) -> tuple[Mapping[str, Any], list[Mapping[str, Any]]]:
        # One call: the issue's status plus the transitions available from it, each with the
        # fields of its screen (a nested expand; "transitions" is named too, so a site that
        # ignored the nested one still lists the transitions).
        raw = self.client.get_issue(key, fields=("status",), expand="transitions,transitions.fields")
        transitions = raw.get("transitions")
        if transitions is None:
            transitions = self.client.transitions(key)
        return _status(raw.get("fields") or {}), [t for t in transitions if isinstance(t, Mapping)]

    def _transition(self, key: str, current: str, transition: Mapping[str, Any]) -> None:
        """Post ``transition``, filling the required fields of its screen that the issue leaves
        empty (:func:`screen_values`)."""
        transition_id = str(transition["id"])
        screen = transition.get("fields")
        if not isinstance(screen, Mapping):
            # the fields were not expanded: read them when the transition has a screen at all
            screen = {}
            if transition.get("hasScreen", True):
                listed = self.client.transitions(key, transition_id=transition_id)
                found = next((t for t in listed if str(t.get("id")) == transition_id), {})
                screen = found.get("fields") if isinstance(found.get("fields"), Mapping) else {}
        # The issue's values of the screen's required fields (one read, only when there are any):
        # those it has are left as they are, as Jira would.
        wanted = [str(f) for f, meta in screen.items() if _needs_current_value(str(f), meta)]
        values_now = (self.client.get_issue(key, fields=wanted).get("fields") or {}) if wanted else {}
        values = screen_values(screen, _describe_transition(key, current, transition), values_now)
        self.client.transition(key, transition_id, fields=values)

    def move_to_status(self, key: str, target: str) -> bool:
        """Transition ``key`` to the status named ``target``; return false when it is there already.

        :raises ProviderError: status 400, which no retry changes (Jira's own answer to a
            transition not available from the issue's status): when the workflow offers no
            transition to ``target``, or when the transition's screen requires a field the issue
            leaves empty and the plugin cannot fill in (:func:`screen_values`). The outbox gives
            such a change up after a few tries, so that the issue's later comments go out.
        """
        status, transitions = self._status_and_transitions(key)
        current = str(status.get("name") or "")
        if current.casefold() == target.casefold():
            return False
        for transition in transitions:
            to = transition.get("to") or {}
            if str(to.get("name", "")).casefold() == target.casefold() and transition.get(
                "isAvailable", True
            ):
                self._transition(key, current, transition)
                return True
        raise ProviderError(
            f"no transition from '{current}' to '{target}' in the workflow of {key}", provider=self.id,
            status=400,
        )

    def set_stage(self, key: str, stage: Stage) -> None:
        if stage is Stage.DONE:
            self.mark_done(key)
            return
        self.move_to_status(key, STAGE_STATUS[stage])

    def mark_done(self, key: str) -> None:
        status, transitions = self._status_and_transitions(key)
        if _category(status) == DONE_CATEGORY:
            return
        candidates = [
            t
            for t in transitions
            if _category(t.get("to") or {}) == DONE_CATEGORY and t.get("isAvailable", True)
        ]
        if not candidates:
            raise ProviderError(
                f"no transition from '{status.get('name', '')}' to a done status in the workflow of {key}",
                provider=self.id, status=400,
            )
        # Prefer a status literally called "Done" when the workflow has several finished states.
        candidates.sort(key=lambda t: str((t.get("to") or {}).get("name", "")).casefold() != "done")
        self._transition(key, str(status.get("name") or ""), candidates[0])

    # -- set-up check -------------------------------------------------------------------------

    def check(self, mappings: Sequence[MappingView]) -> Sequence[CheckResult]:
        """``aiimpl check``: the credentials, each mapped project's statuses (:meth:`check_setup`),
        and every mapping's ``ticketing.jql`` (one parse for all of them).

        Requests: ``GET /myself``, one ``GET /project/{key}/statuses`` per project (Jira has no
        call that reads several projects' workflow statuses; its 404 also says the project does
        not exist or is hidden from the account), and one ``POST /jql/parse`` when any mapping
        has a clause. Refused credentials are a failed ``credentials`` line, not an exception.
        """
        projects = list(dict.fromkeys(m.team_key for m in mappings))
        try:
            report = self.check_setup(projects)
        except ProviderError as exc:
            if exc.status not in (401, 403):
                raise
            return [CheckResult("credentials", False, exc.message)]
        account = report["account"]
        who = account.get("displayName") or account.get("accountId") or "an unnamed account"
        results = [CheckResult("credentials", True, f"signed in as {who}")]
        searched = set(self.searched_projects(projects))
        for project in projects:
            entry = report["projects"][project]
            if entry["error"]:
                results.append(CheckResult(f"project {project}", False, entry["error"]))
                continue
            problems = [f"missing status '{name}'" for name in entry["missing"]]
            if not entry["done"]:
                problems.append("no status in the done category (needed when a PR merges)")
            if project not in searched:
                problems.append("not in AIIMPL_JIRA_PROJECTS: its issues are never listed")
            detail = "; ".join(problems) or (
                f"the workflow has {', '.join(REQUIRED_STATUSES)} and a done status"
            )
            results.append(CheckResult(f"project {project}", not problems, detail))
        clauses = self._mapping_clauses(mappings)
        if clauses:
            try:
                errors = self._clause_errors(clauses)
            except ProviderError as exc:
                errors = {p: [f"could not be checked: {exc.message}"] for p in clauses}
            for project, clause in clauses.items():
                found = errors.get(project) or []
                detail = f"ticketing.jql is invalid: {'; '.join(found)}" if found else f"valid: {clause}"
                results.append(CheckResult(f"jql {project}", not found, detail))
        return results

    def check_setup(self, projects: Sequence[str]) -> dict[str, Any]:
        """Whether the credentials work and each project's workflow has the lifecycle's statuses.

        Returns ``{"ok", "account", "projects": {KEY: {"missing": [...], "done": bool, "error"}}}``.
        Transitions between the statuses are not checked (Jira has no read API for them that works
        without an issue); a missing transition shows up as a named error when a stage is set.
        """
        account = self.client.myself()
        report: dict[str, Any] = {
            "ok": True,
            "account": {"accountId": account.get("accountId"), "displayName": account.get("displayName")},
            "projects": {},
        }
        wanted = REQUIRED_STATUSES
        for project in projects:
            entry: dict[str, Any] = {"missing": [], "done": False, "error": None}
            try:
                issue_types = self.client.project_statuses(project)
            except (ProviderError, NotFound) as exc:
                entry["error"] = exc.message
                report["ok"] = False
                report["projects"][project] = entry
                continue
            names: set[str] = set()
            for issue_type in issue_types:
                for status in issue_type.get("statuses") or ():
                    names.add(str(status.get("name", "")).casefold())
                    entry["done"] = entry["done"] or _category(status) == DONE_CATEGORY
            entry["missing"] = [name for name in wanted if name.casefold() not in names]
            if entry["missing"] or not entry["done"]:
                report["ok"] = False
            report["projects"][project] = entry
        return report

    # -- settings -----------------------------------------------------------------------------

    def validate_mapping(self, mapping: Mapping[str, Any]) -> None:
        ticketing = mapping.get("ticketing")
        if ticketing is None:
            return
        if isinstance(ticketing, Mapping) and ticketing.get("provider") not in (None, self.id):
            return  # another tracker's mapping: its own provider checks it
        problem = ticketing_errors(ticketing)
        if problem:
            raise ProviderConfigError(problem, provider=self.id)
        jql = ticketing.get("jql") if isinstance(ticketing, Mapping) else None
        if isinstance(jql, str) and jql.strip() and self.is_configured():
            self._check_clause_with_jira(jql.strip())

    def _check_clause_with_jira(self, jql: str) -> None:
        """Refuse a clause Jira's parser refuses: saved, it would fail every Jira listing."""
        try:
            parsed = self.client.parse_jql([jql])
        except ProviderError as exc:
            # Jira unreachable: accept; a bad clause is still named when the listing fails
            self.log.warning("could not check ticketing.jql with Jira: %s", exc.message)
            return
        errors = [str(e) for entry in parsed for e in entry.get("errors") or ()]
        if errors:
            raise ProviderConfigError(f"ticketing.jql is invalid: {'; '.join(errors)}", provider=self.id)
