"""The Jira settings panel: a field's options are those of the field selected; a JQL clause's result is
that clause's, with Jira's warnings."""
from __future__ import annotations

import json
from typing import Any

import pytest

from .test_browser import sign_in

pytestmark = pytest.mark.browser


def _json(route: Any, body: Any) -> None:
    route.fulfill(status=200, content_type="application/json", body=json.dumps(body))


def test_a_late_answer_for_a_field_no_longer_selected_is_dropped(page, app):
    pytest.importorskip("aiimpl_jira")
    held: list[Any] = []
    page.route("**/api/jira/fields", lambda route: _json(route, [{"id": "alpha", "name": "Alpha"},
                                                                  {"id": "beta", "name": "Beta"}]))

    def options(route: Any) -> None:
        if route.request.url.endswith("fieldId=alpha"):
            held.append(route)  # Alpha's options are on their way until the test lets them through
        else:
            _json(route, [{"id": "b1", "value": "Beta one"}])

    page.route("**/api/jira/field-options?*", options)
    sign_in(page)
    page.goto("/ui/jira")
    field, option = page.get_by_label("Field", exact=True), page.get_by_label("Option", exact=True)
    field.locator('option[value="beta"]').wait_for(state="attached")
    with page.expect_request("**/api/jira/field-options?fieldId=alpha"):
        field.select_option("alpha")
    field.select_option("beta")
    option.locator('option[value="b1"]').wait_for(state="attached")
    assert len(held) == 1
    _json(held.pop(), [{"id": "a1", "value": "Alpha one"}])
    page.evaluate("() => new Promise((done) => setTimeout(done, 300))")  # the page has read it by now
    assert option.locator("option").all_inner_texts() == ["Beta one"]
    field.select_option("")
    assert option.locator("option").all_inner_texts() == ["Choose a field first"]


def test_a_clause_jira_warns_about_says_so_and_a_clause_typed_since_has_no_result_yet(page, app):
    """Jira's warnings were dropped ("Valid JQL" for a clause naming a value no issue has), and the
    last clause's result stayed under a clause typed since, as if it were that one's."""
    pytest.importorskip("aiimpl_jira")
    warning = "The value 'bakcend' does not exist for the field 'labels'."
    held: list[Any] = []

    def validate(route: Any) -> None:
        jql = route.request.post_data_json["jql"]
        if jql == "labels = slow":
            held.append(route)
        else:
            _json(route, {"valid": True, "jql": jql, "warnings": [warning] if "bakcend" in jql else []})

    page.route("**/api/jira/validate-jql", validate)
    sign_in(page)
    page.goto("/ui/jira")
    clause, result = page.get_by_label("JQL", exact=True), page.locator("#jql-result")
    clause.fill("labels = bakcend")
    page.get_by_role("button", name="Check").click()
    result.get_by_text(f"Valid JQL, but Jira warns: {warning}", exact=True).wait_for()
    clause.fill("labels = backend")
    assert result.inner_text() == ""
    page.get_by_role("button", name="Check").click()
    result.get_by_text("Valid JQL", exact=True).wait_for()
    # a clause checked, then changed before its answer came: the answer is not said of the new one
    clause.fill("labels = slow")
    with page.expect_request("**/api/jira/validate-jql"):
        page.get_by_role("button", name="Check").click()
    result.get_by_text("Checking…").wait_for()
    clause.fill("labels = other")
    _json(held.pop(), {"valid": True, "jql": "labels = slow", "warnings": []})
    page.evaluate("() => new Promise((done) => setTimeout(done, 300))")  # the page has read it by now
    assert result.inner_text() == ""
