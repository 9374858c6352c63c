"""The Jira settings panel: a field's options are those of the field selected."""
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
