"""Every GraphQL document the plugin can send validates against Linear's published schema."""

from __future__ import annotations

import ast
import pathlib

import graphql
import pytest

from aiimpl_linear import queries
from aiimpl_linear.config import CLOSED_STATE_TYPES, MAX_PAGE_SIZE
from aiimpl_linear.testing.fake_linear import MAX_COMPLEXITY, STATE_TYPES, complexity, linear_schema

PACKAGE = pathlib.Path(queries.__file__).parent


def _graphql_literals() -> list[tuple[str, str]]:
    """String constants in the plugin's code that look like GraphQL operations."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        if "testing" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                head = node.value.lstrip()
                if head.startswith(("query ", "mutation ", "fragment ", "subscription ")):
                    found.append((f"{path.name}:{node.lineno}", node.value))
    return found


def test_documents_are_registered() -> None:
    assert set(queries.DOCUMENTS) >= {
        "TriggeredIssues",
        "IssueWithComments",
        "IssueInverseRelations",
        "IssueComments",
        "IssueLabelsOfIssue",
        "IssueRef",
        "LabelsByName",
        "CreateLabel",
        "UpdateIssueLabels",
        "CreateComment",
        "CommentById",
        "TeamDoneStates",
        "SetIssueState",
    }


@pytest.mark.parametrize("name", sorted(queries.DOCUMENTS))
def test_document_validates_against_linear_schema(name: str) -> None:
    document = graphql.parse(queries.DOCUMENTS[name])
    assert graphql.validate(linear_schema(), document) == []
    operations = [d for d in document.definitions if isinstance(d, graphql.OperationDefinitionNode)]
    assert len(operations) == 1 and operations[0].name and operations[0].name.value == name


def test_no_graphql_outside_the_registry() -> None:
    # Operations live only in queries.py, where the test above validates each of them; any other
    # GraphQL text in the plugin would be sent unchecked.
    literals = _graphql_literals()
    outside = [where for where, _text in literals if not where.startswith("queries.py")]
    assert outside == []


def test_validation_catches_a_wrong_document() -> None:
    # the check above has teeth: a field Linear does not have is reported
    bad = graphql.parse('query Bad { issue(id: "x") { identifier noSuchField } }')
    assert graphql.validate(linear_schema(), bad)


def test_listing_stays_under_linear_complexity_limit_at_max_page_size() -> None:
    document = graphql.parse(queries.TRIGGERED_ISSUES)
    cost = complexity(linear_schema(), document, {"first": MAX_PAGE_SIZE}, "TriggeredIssues")
    assert 1000 < cost <= MAX_COMPLEXITY


def test_looking_a_comment_up_costs_next_to_nothing() -> None:
    # a retried comment reads one comment before it is created: a few points, not a page
    document = graphql.parse(queries.COMMENT_BY_ID)
    assert complexity(linear_schema(), document, {"id": "x"}, "CommentById") < 5


def test_listing_leaves_out_exactly_the_closed_state_types() -> None:
    """The listing's filter and the provider's test of a closed blocker are one constant, and it
    names every closed type of Linear's schema: ``duplicate`` too, not only ``completed`` and
    ``canceled``."""
    assert CLOSED_STATE_TYPES == {"completed", "canceled", "duplicate"}
    assert CLOSED_STATE_TYPES <= set(STATE_TYPES)
    nin: list[graphql.ValueNode] = []

    class Filters(graphql.Visitor):
        def enter_object_field(self, node: graphql.ObjectFieldNode, *_args: object) -> None:
            if node.name.value == "nin":
                nin.append(node.value)

    graphql.visit(graphql.parse(queries.TRIGGERED_ISSUES), Filters())
    [excluded] = nin
    assert isinstance(excluded, graphql.ListValueNode)
    assert {v.value for v in excluded.values if isinstance(v, graphql.StringValueNode)} == CLOSED_STATE_TYPES
    assert len(excluded.values) == len(CLOSED_STATE_TYPES)
