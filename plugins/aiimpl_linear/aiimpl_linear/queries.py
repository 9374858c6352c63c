"""Every GraphQL document the Linear client sends, in one place.

Each document is registered in :data:`DOCUMENTS` under its operation name; the test suite
validates all of them against Linear's published schema, and the client refuses to send a
document that is not registered here.
"""

from __future__ import annotations

import json

from .config import CLOSED_STATE_TYPES

DOCUMENTS: dict[str, str] = {}


def _document(name: str, text: str) -> str:
    """Register ``text`` (whose operation is called ``name``) and return it."""
    if name in DOCUMENTS:
        raise ValueError(f"GraphQL operation {name} is defined twice")
    DOCUMENTS[name] = text
    return text


# Linear prices a query by its shape: 0.1 point per scalar, 1 per object, and a connection's
# nodes multiplied by its ``first`` -- so nested connections in a page of issues multiply by the
# page size, and a query above 10,000 points is refused. The listing reads a short page of each
# issue's labels and relations (about 39 points per issue: 250 issues fit); the single issue read
# takes longer pages. A blocking relation may be anywhere among an issue's relations (they cannot
# be filtered by type), so both read the relations' ``pageInfo``, and the rare issue with more
# relations than the page has the rest read by ``IssueInverseRelations``. Every comment goes into
# the agent's context (the orchestrator alone posts several per run), so the single issue read
# takes a first page of comments with its ``pageInfo`` and ``IssueComments`` reads the rest.
# A label's ``retiredAt`` is read with its name: an issue whose only trigger label is retired is not
# triggered (labels cannot be filtered on it, so the listing returns such issues all the same).
LIST_LABELS = 12
LIST_RELATIONS = 5
#: Relations per ``IssueInverseRelations`` page. Not Linear's largest (250): the listing reads the
#: rest of an issue's relations on every poll while it is triggered, and a page of 250 costs some
#: 850 points of the hourly complexity budget whether it holds 6 relations or 250 (50 triggered
#: issues with a few relations too many spent 2.7 million points an hour); most issues with more
#: than the listing's 5 have fewer than 55.
RELATIONS_PAGE = 50
#: Comments read with the issue by ``IssueWithComments``.
FIRST_COMMENTS = 100
#: Comments per ``IssueComments`` page (Linear's largest page).
COMMENTS_PAGE = 250

# What is read of a relation: an inverse relation of type "blocks" is one whose issue blocks ours.
_RELATION_FIELDS = "type issue { identifier title state { type } }"
# What is read of a comment.
_COMMENT_FIELDS = "id body createdAt user { name }"


def _issue_fields(name: str, labels: int, relations: int, *, archived: bool = False) -> str:
    """An issue's fields; ``archived``: whether it is archived or in the trash too (an issue read
    by its id may be; a listing leaves those out)."""
    archive = "\n  archivedAt\n  trashed" if archived else ""
    return f"""
fragment {name} on Issue {{
  id
  identifier
  title
  description
  url
  updatedAt{archive}
  team {{ id key }}
  state {{ name type }}
  labels(first: {labels}) {{ nodes {{ name retiredAt }} }}
  inverseRelations(first: {relations}) {{
    nodes {{ {_RELATION_FIELDS} }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}
"""


# The closed state types as a GraphQL list literal (a JSON array of strings is one): the listing
# leaves out exactly the issues the provider counts as closed.
_CLOSED_TYPES = json.dumps(sorted(CLOSED_STATE_TYPES))

TRIGGERED_ISSUES = _document(
    "TriggeredIssues",
    f"""
query TriggeredIssues($first: Int!, $after: String, $label: String!) {{
  issues(
    first: $first
    after: $after
    orderBy: createdAt
    filter: {{
      labels: {{ some: {{ name: {{ eqIgnoreCase: $label }} }} }}
      state: {{ type: {{ nin: {_CLOSED_TYPES} }} }}
    }}
  ) {{
    nodes {{ ...ListedIssue }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}
"""
    + _issue_fields("ListedIssue", LIST_LABELS, LIST_RELATIONS),
)

ISSUE_WITH_COMMENTS = _document(
    "IssueWithComments",
    f"""
query IssueWithComments($id: String!) {{
  issue(id: $id) {{
    ...FullIssue
    comments(first: {FIRST_COMMENTS}) {{
      nodes {{ {_COMMENT_FIELDS} }}
      pageInfo {{ hasNextPage endCursor }}
    }}
  }}
}}
"""
    + _issue_fields("FullIssue", 100, 50, archived=True),
)

ISSUE_COMMENTS = _document(
    "IssueComments",
    f"""
query IssueComments($id: String!, $after: String) {{
  issue(id: $id) {{
    comments(first: {COMMENTS_PAGE}, after: $after) {{
      nodes {{ {_COMMENT_FIELDS} }}
      pageInfo {{ hasNextPage endCursor }}
    }}
  }}
}}
""",
)

ISSUE_INVERSE_RELATIONS = _document(
    "IssueInverseRelations",
    f"""
query IssueInverseRelations($id: String!, $after: String) {{
  issue(id: $id) {{
    inverseRelations(first: {RELATIONS_PAGE}, after: $after) {{
      nodes {{ {_RELATION_FIELDS} }}
      pageInfo {{ hasNextPage endCursor }}
    }}
  }}
}}
""",
)

ISSUE_LABELS = _document(
    "IssueLabelsOfIssue",
    """
query IssueLabelsOfIssue($id: String!) {
  issue(id: $id) {
    id
    identifier
    team { id key }
    labels(first: 100) { nodes { id name retiredAt } }
  }
}
""",
)

ISSUE_REF = _document(
    "IssueRef",
    """
query IssueRef($id: String!) {
  issue(id: $id) { id identifier team { id key } state { type } }
}
""",
)

LABELS_BY_NAME = _document(
    "LabelsByName",
    """
query LabelsByName($filter: IssueLabelFilter!) {
  issueLabels(first: 100, filter: $filter) {
    nodes { id name isGroup retiredAt team { id } }
  }
}
""",
)

CREATE_LABEL = _document(
    "CreateLabel",
    """
mutation CreateLabel($name: String!, $teamId: String!, $color: String) {
  issueLabelCreate(input: { name: $name, teamId: $teamId, color: $color }) {
    success
    issueLabel { id name team { id } }
  }
}
""",
)

# A retired label (``retiredAt`` set) is still listed but can be applied to no issue; the schema
# documents ``issueLabelRestore`` to make it usable again (and nothing on whether a second label
# may be created under a retired one's name), so that is what is done when no active label of a
# stage's name exists.
RESTORE_LABEL = _document(
    "RestoreLabel",
    """
mutation RestoreLabel($id: String!) {
  issueLabelRestore(id: $id) {
    success
    issueLabel { id name retiredAt team { id } }
  }
}
""",
)

UPDATE_LABELS = _document(
    "UpdateIssueLabels",
    """
mutation UpdateIssueLabels($id: String!, $added: [String!], $removed: [String!]) {
  issueUpdate(id: $id, input: { addedLabelIds: $added, removedLabelIds: $removed }) {
    success
    issue { id labels(first: 50) { nodes { id name } } }
  }
}
""",
)

# ``id``: the comment's identity, a UUID the caller chooses (a queued comment's ``ref``), so that a
# try whose answer was lost can find the comment it posted. Left out (a variable not sent is an
# input field not given), Linear makes one up.
CREATE_COMMENT = _document(
    "CreateComment",
    """
mutation CreateComment($issueId: String!, $body: String!, $id: String) {
  commentCreate(input: { issueId: $issueId, body: $body, id: $id }) {
    success
    comment { id body createdAt user { name } }
  }
}
""",
)

COMMENT_BY_ID = _document(
    "CommentById",
    """
query CommentById($id: String!) {
  comment(id: $id) { id body createdAt user { name } issueId }
}
""",
)

TEAM_DONE_STATES = _document(
    "TeamDoneStates",
    """
query TeamDoneStates($teamId: String!) {
  team(id: $teamId) {
    id
    key
    states(first: 50, filter: { type: { eq: "completed" } }) { nodes { id name type position } }
  }
}
""",
)

SET_STATE = _document(
    "SetIssueState",
    """
mutation SetIssueState($id: String!, $stateId: String!) {
  issueUpdate(id: $id, input: { stateId: $stateId }) {
    success
    issue { id state { id name type } }
  }
}
""",
)

SETUP_CHECK = _document(
    "SetupCheck",
    """
query SetupCheck($teamFilter: TeamFilter!, $labelFilter: IssueLabelFilter!) {
  viewer { name email }
  teams(first: 100, filter: $teamFilter) {
    nodes {
      id
      key
      name
      states(first: 50, filter: { type: { eq: "completed" } }) { nodes { name position } }
    }
  }
  issueLabels(first: 250, filter: $labelFilter) { nodes { name isGroup retiredAt team { key } } }
}
""",
)
