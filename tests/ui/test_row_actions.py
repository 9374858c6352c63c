"""Row actions in the panels: the keyboard focus after them, a row another admin removed meanwhile,
a mapping being edited that is deleted, and which field a form's error names."""
from __future__ import annotations

import pytest

from aiimpl_core.extensions import db
from aiimpl_core.services import mappings, secrets
from aiimpl_core.testing.fakes import add_mapping

from .conftest import WAIT_MS
from .test_browser import save_after_the_session_ended, sign_in
from .test_outbox_panel import add_item

pytestmark = pytest.mark.browser


def _has_focus(locator) -> None:  # noqa: ANN001
    """Waits until ``locator`` has the keyboard focus (a list read again after the action's message
    moves it only then)."""
    from playwright.sync_api import expect

    expect(locator).to_be_focused(timeout=WAIT_MS)


def _focused(page) -> str:  # noqa: ANN001
    """The focused element's accessible name (aria-label, else its text), or its tag."""
    return page.evaluate(
        "() => { const el = document.activeElement; return el === document.body || !el ? 'BODY'"
        " : el.getAttribute('aria-label') || el.textContent.trim() || el.tagName; }")


def _accept_dialogs(page) -> None:  # noqa: ANN001
    page.on("dialog", lambda dialog: dialog.accept())


def test_pause_and_set_cap_keep_the_keyboard_focus_on_the_row(page, app):
    """The refreshed row replaced the one whose button was pressed: the focus fell to the page's
    start, and Tab went on from there."""
    add_mapping("ENG")
    add_mapping("OPS")
    sign_in(page)
    row = page.locator('#mappings-table tr[data-team="ENG"]')
    row.get_by_role("button", name="Pause mapping ENG").focus()
    page.keyboard.press("Enter")
    _has_focus(row.get_by_role("button", name="Resume mapping ENG"))

    # Enter in the cap box sets the cap, as its button does; the focus stays on the row
    row.get_by_label("Cap for ENG").fill("3")
    row.get_by_label("Cap for ENG").press("Enter")
    page.get_by_text("Cap of ENG set to 3").wait_for()
    # (the message comes before the list is read again: the focus moves once it has been)
    _has_focus(row.get_by_role("button", name="Set cap of ENG"))
    assert mappings.get("ENG")["maxInProgressAiIssues"] == 3


def test_deleting_the_mapping_being_edited_leaves_the_edit(page, app):
    """The form still said it edited ENG, its key read-only: Save created ENG again, without the
    team secrets deleted with it."""
    _accept_dialogs(page)
    add_mapping("ENG")
    add_mapping("OPS")
    sign_in(page)
    row = page.locator('#mappings-table tr[data-team="ENG"]')
    row.get_by_role("button", name="Edit mapping ENG").click()
    page.get_by_text("Editing the mapping of ENG").wait_for()
    row.get_by_role("button", name="Delete mapping ENG").click()
    page.locator("#flash.ok").get_by_text("ENG deleted").wait_for()
    assert page.locator("#mapping-editing").is_hidden()
    assert page.get_by_label("Team key").input_value() == ""
    assert page.get_by_label("Team key").get_attribute("readonly") is None
    # the focus goes to the same button of the row now in its place
    _has_focus(page.get_by_role("button", name="Delete mapping OPS"))


def test_a_read_of_the_list_answered_after_a_later_one_is_not_shown(page, app):
    """Edit reads the Projects list again without waiting for it: that read, answered after the one
    of a later Delete, put the deleted mapping's row back, its buttons acting on nothing."""
    _accept_dialogs(page)
    add_mapping("ENG")
    add_mapping("OPS")
    sign_in(page)
    row = page.locator('#mappings-table tr[data-team="ENG"]')
    row.wait_for()
    late: list = []

    def edit_s_read_answered_late(route) -> None:  # noqa: ANN001
        if route.request.method == "GET" and not late:
            late.append((route, route.fetch()))  # read now (ENG listed), answered later
        else:
            route.fallback()

    page.route("**/api/mappings", edit_s_read_answered_late)
    row.get_by_role("button", name="Edit mapping ENG").click()
    page.get_by_text("Editing the mapping of ENG").wait_for()
    row.get_by_role("button", name="Delete mapping ENG").click()
    page.locator("#flash.ok").get_by_text("ENG deleted").wait_for()
    row.wait_for(state="detached")
    page.get_by_role("button", name="Pause mapping OPS").click()
    page.get_by_role("button", name="Resume mapping OPS").wait_for()
    route, answer = late[0]
    with page.expect_event("requestfinished"):
        route.fulfill(response=answer)  # ENG listed, OPS not paused
    page.evaluate("() => new Promise((done) => setTimeout(done, 300))")  # (the answer has been read)
    assert row.count() == 0
    assert page.get_by_role("button", name="Resume mapping OPS").count() == 1


def test_an_edit_of_a_mapping_deleted_meanwhile_is_not_saved_as_a_new_one(page, app):
    add_mapping("ENG")
    sign_in(page)
    page.locator('#mappings-table tr[data-team="ENG"]').get_by_role("button", name="Edit mapping ENG").click()
    page.get_by_text("Editing the mapping of ENG").wait_for()
    mappings.delete_mapping("ENG")  # another admin
    page.get_by_label("Default branch").fill("trunk")
    page.get_by_role("button", name="Save mapping").click()
    page.get_by_text("The mapping of ENG was deleted meanwhile (its team secrets with it): "
                     "Save again to create it anew.").wait_for()
    assert [m["teamKey"] for m in mappings.list_mappings()] == []
    assert page.get_by_label("Team key").get_attribute("readonly") is None
    assert page.get_by_label("Default branch").input_value() == "trunk"  # what was typed stays
    page.get_by_role("button", name="Save mapping").click()
    page.get_by_text("Mapping ENG saved").wait_for()
    db.session.rollback()  # (the read above began a snapshot of its own)
    assert mappings.get("ENG")["defaultBranch"] == "trunk"


def test_an_action_on_a_mapping_deleted_meanwhile_says_so_and_drops_the_row(page, app):
    """Delete said "HTTP 404", Pause "Team not found" and Set cap "Cap of … not changed", the row
    left in the list; an edit of the mapping under way keeps what was typed, no longer an edit.

    Each mapping is deleted while no read of the list is on its way: one answered after the deletion
    drops the row before its button can be pressed (Edit reads the list again, and does not wait)."""
    _accept_dialogs(page)
    for team in ("ENG", "OPS", "WEB"):
        add_mapping(team)
    sign_in(page)
    page.locator('#mappings-table tr[data-team="OPS"]').wait_for()  # (the first read of the list)
    add_mapping("DOC")  # another admin: only a read of the list after Edit's click shows it
    page.locator('#mappings-table tr[data-team="OPS"]').get_by_role("button", name="Edit mapping OPS").click()
    page.get_by_text("Editing the mapping of OPS").wait_for()  # (Edit reads the mapping anew)
    page.locator('#mappings-table tr[data-team="DOC"]').wait_for()  # and then the list
    page.get_by_label("Default branch").fill("trunk")
    for team, button in (("ENG", "Delete mapping ENG"), ("OPS", "Pause mapping OPS"),
                         ("WEB", "Set cap of WEB")):
        row = page.locator(f'#mappings-table tr[data-team="{team}"]')
        row.wait_for()
        mappings.delete_mapping(team)
        row.get_by_role("button", name=button).click()
        page.locator("#flash.error").get_by_text(
            f"The mapping of {team} no longer exists: it was deleted meanwhile.").wait_for()
        row.wait_for(state="detached")
        if team == "OPS":
            assert page.get_by_label("Default branch").input_value() == "trunk"
            assert page.get_by_label("Team key").input_value() == "OPS"
            assert page.get_by_label("Team key").get_attribute("readonly") is None
            assert page.locator("#mapping-editing").is_hidden()


def test_the_error_of_several_required_fields_names_the_one_left_empty(page, app):
    sign_in(page)
    page.get_by_label("Team key").fill("ENG")
    page.get_by_label("Repository").fill("api")
    page.get_by_label("Default branch").fill("main")
    page.get_by_role("button", name="Save mapping").click()
    error = page.locator('.field-error[data-for="owner"]')
    error.get_by_text("teamKey, owner, and repo are required").wait_for()
    assert page.get_by_label("GitHub owner").get_attribute("aria-invalid") == "true"
    assert page.get_by_label("Team key").get_attribute("aria-invalid") is None
    assert _focused(page) != "BODY" and page.evaluate("document.activeElement.name") == "owner"


def test_an_edit_kept_across_a_sign_in_is_still_an_edit(page, app):
    """The restored form had its team key editable again: a changed key saved a second mapping."""
    add_mapping("ENG")
    sign_in(page)
    page.locator('#mappings-table tr[data-team="ENG"]').get_by_role("button", name="Edit mapping ENG").click()
    page.get_by_text("Editing the mapping of ENG").wait_for()  # (Edit reads the mapping anew)
    page.get_by_label("Default branch").fill("trunk")
    save_after_the_session_ended(page)
    page.get_by_text("Signed in again: the form holds what you had typed.").wait_for()
    assert page.get_by_label("Team key").get_attribute("readonly") is not None
    assert page.locator("#mapping-editing").is_visible()
    page.get_by_role("button", name="Save mapping").click()
    page.get_by_text("Mapping ENG saved").wait_for()
    assert mappings.get("ENG")["defaultBranch"] == "trunk"


def test_a_secret_deleted_meanwhile_says_so_and_the_focus_stays_in_the_list(page, app):
    _accept_dialogs(page)
    for name in ("A_TOKEN", "B_TOKEN", "C_TOKEN"):
        secrets.set_secret(secrets.GLOBAL, name, "value-" + name)
    sign_in(page)
    page.get_by_role("link", name="Secrets").click()
    table = page.locator("#secrets-table")
    table.locator('tr[data-name="C_TOKEN"]').wait_for()
    table.get_by_role("button", name="Delete secret A_TOKEN").click()
    page.get_by_text("Secret A_TOKEN deleted").wait_for()
    _has_focus(table.get_by_role("button", name="Delete secret B_TOKEN"))

    secrets.delete_secret(secrets.GLOBAL, "B_TOKEN")  # another admin
    page.keyboard.press("Enter")
    said = "Secret B_TOKEN no longer exists: it was deleted meanwhile."
    page.locator("#flash.error").get_by_text(said).wait_for()
    table.locator('tr[data-name="B_TOKEN"]').wait_for(state="detached")
    _has_focus(table.get_by_role("button", name="Delete secret C_TOKEN"))


def test_a_name_the_browser_refuses_takes_away_the_last_success(page, app):
    sign_in(page)
    page.get_by_role("link", name="Secrets").click()
    page.get_by_label("Name").fill("NPM_TOKEN")
    page.get_by_label("Value").fill("s3cr3t-value")
    page.get_by_role("button", name="Set secret").click()
    page.locator("#flash.ok").get_by_text("Secret NPM_TOKEN set").wait_for()
    page.get_by_label("Name").fill("bad-name")
    page.get_by_label("Value").fill("another")
    page.get_by_role("button", name="Set secret").click()
    page.wait_for_function("() => document.getElementById('flash').textContent === ''")


def test_retry_moves_the_focus_to_the_next_items_retry(page, app):
    first, second = add_item(1), add_item(2)
    sign_in(page)
    page.get_by_role("link", name="Outbox").click()
    rows = page.locator("#outbox-table tbody tr")
    page.locator(f'#outbox-table tr[data-id="{first}"]').wait_for()
    index = [rows.nth(n).get_attribute("data-id") for n in range(rows.count())]
    top, other = index[0], index[1]
    page.get_by_role("button", name=f"Retry item {top}").focus()
    page.keyboard.press("Enter")
    page.get_by_text(f"Outbox item {top} re-queued").wait_for()
    page.locator(f'#outbox-table tr[data-id="{top}"]').wait_for(state="detached")
    _has_focus(page.get_by_role("button", name=f"Retry item {other}"))
    assert {first, second} == {int(top), int(other)}


def test_a_second_click_on_delete_or_cancel_while_the_first_is_on_its_way_asks_and_sends_nothing(page, app):
    """Delete secret sent its request again, which was refused and said 'deleted meanwhile'; Cancel
    asked a second time whether to cancel the job its first click was cancelling."""
    from .test_dispatch_log import add_job

    asked: list[str] = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    add_mapping("ENG")
    job = add_job()
    secrets.set_secret(secrets.GLOBAL, "A_TOKEN", "value")
    sign_in(page)
    held: list = []
    for panel, path, button, said in (
            ("secrets", "**/api/global-secrets/A_TOKEN", "Delete secret A_TOKEN", "Secret A_TOKEN deleted"),
            ("jobs", f"**/api/jobs/{job.id}/cancel", f"Cancel job {job.id}", f"Job {job.id} cancelled")):
        page.goto(f"/ui/{panel}")
        page.route(path, lambda route: held.append(route))
        action = page.get_by_role("button", name=button, exact=True)
        with page.expect_request(path):
            action.click()
        action.click()  # while the first is on its way
        page.evaluate("() => new Promise((done) => setTimeout(done, 300))")
        assert len(held) == 1 and len(asked) == 1
        held.pop().continue_()
        page.locator("#flash.ok").get_by_text(said, exact=True).wait_for()
        asked.clear()
    db.session.rollback()  # (the reads above began a snapshot of their own)
    assert secrets.list_secrets(secrets.GLOBAL) == []


def test_edit_shows_the_mapping_as_it_is_now_not_as_listed(page, app):
    """The Projects list is read once: Edit filled the form from it, and saving that edit put back
    what another admin had changed meanwhile."""
    add_mapping("ENG")
    sign_in(page)
    row = page.locator('#mappings-table tr[data-team="ENG"]')
    row.wait_for()
    mappings.patch("ENG", {"maxInProgressAiIssues": 7})  # another admin
    db.session.commit()
    row.get_by_role("button", name="Edit mapping ENG").click()
    page.get_by_text("Editing the mapping of ENG").wait_for()
    assert page.get_by_label("Concurrency cap").input_value() == "7"
    page.wait_for_function("() => document.getElementById('cap-ENG').value === '7'")  # and its row
    page.get_by_label("Default branch").fill("trunk")
    page.get_by_role("button", name="Save mapping").click()
    page.get_by_text("Mapping ENG saved").wait_for()
    db.session.rollback()  # (the read above began a snapshot of its own)
    assert mappings.get("ENG")["maxInProgressAiIssues"] == 7
    assert mappings.get("ENG")["defaultBranch"] == "trunk"


def test_an_action_declined_at_its_confirm_sends_nothing_and_keeps_the_focus(page, app):
    """Cancel, Destroy and Delete ask first: No sends nothing, and the keyboard focus is back on the
    button that asked (a keyboard user goes on from there, not from the page's start)."""
    import json

    from .test_dispatch_log import add_job

    add_mapping("ENG")
    job = add_job()
    secrets.set_secret(secrets.GLOBAL, "A_TOKEN", "value")
    asked: list[str] = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    sign_in(page)
    sent: list[str] = []
    page.on("request", lambda request: request.method != "GET" and sent.append(request.method))
    listed = [{"id": "m-1", "backend": "fly-machines", "state": "started", "jobId": job.id,
               "issueKey": "ENG-7"}]
    page.route("**/api/sessions**", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps(listed)))
    for panel, button in (("projects", "Delete mapping ENG"), ("jobs", f"Cancel job {job.id}"),
                          ("sessions", "Destroy session m-1"), ("secrets", "Delete secret A_TOKEN")):
        page.goto(f"/ui/{panel}")
        action = page.get_by_role("button", name=button, exact=True)
        for press in ("keyboard", "mouse"):
            with page.expect_event("dialog"):
                if press == "keyboard":
                    action.focus()
                    page.keyboard.press("Enter")
                else:
                    action.click()
            page.evaluate("() => new Promise((done) => setTimeout(done, 100))")  # (the handler has run)
            assert _focused(page) == button, (panel, press)
            assert action.get_attribute("aria-busy") is None
            page.evaluate("() => document.activeElement.blur()")
        assert len(asked) == 2, panel
        asked.clear()
    assert sent == []
    assert mappings.get("ENG") is not None


def _edit_that_cannot_read_its_mapping(page, team: str) -> None:  # noqa: ANN001
    """Click Edit of ``team``, whose mapping the server fails to read (500), and see that said."""
    import json

    page.route(f"**/api/mappings/{team}", lambda route: route.fulfill(
        status=500, content_type="application/json", body=json.dumps({"error": "database unavailable"})))
    page.get_by_role("button", name=f"Edit mapping {team}").click()
    page.locator("#flash.error").get_by_text(
        f"Could not read the mapping of {team} to edit it (the form is as it was): database unavailable",
        exact=True).wait_for()


def test_edit_s_form_takes_nothing_until_the_mapping_has_come(page, app):
    """Edit fills the form once the mapping has been read: meanwhile the form held what it held
    before (here the edit of another mapping), open to typing and Save. It is disabled and busy until
    then; a mapping that cannot be read is said so, and leaves the form as it was."""

    from playwright.sync_api import expect

    add_mapping("ENG", repo="eng-repo")
    add_mapping("OPS", repo="ops-repo")
    sign_in(page)
    fields = page.locator("#mapping-fields")
    repo = page.get_by_label("Repository", exact=True)
    page.get_by_role("button", name="Edit mapping OPS").click()
    page.get_by_text("Editing the mapping of OPS").wait_for()
    expect(repo).to_have_value("ops-repo")

    held: list = []
    page.route("**/api/mappings/ENG", lambda route: held.append(route))
    with page.expect_request("**/api/mappings/ENG"):
        page.get_by_role("button", name="Edit mapping ENG").click()
    expect(repo).to_be_disabled()
    expect(page.get_by_label("GitHub owner", exact=True)).to_be_disabled()
    expect(page.get_by_role("button", name="Save mapping")).to_be_disabled()
    expect(fields).to_have_attribute("aria-busy", "true")
    page.locator("#mapping-editing").get_by_text("Reading the mapping of ENG…", exact=True).wait_for()
    held.pop().continue_()
    page.get_by_text("Editing the mapping of ENG").wait_for()
    expect(fields).not_to_have_attribute("aria-busy", "true")
    expect(repo).to_have_value("eng-repo")
    expect(repo).to_be_enabled()
    expect(page.get_by_label("GitHub owner", exact=True)).to_be_focused()

    _edit_that_cannot_read_its_mapping(page, "OPS")
    expect(fields).to_be_enabled()
    page.get_by_text("Editing the mapping of ENG").wait_for()
    expect(repo).to_have_value("eng-repo")
    expect(page.get_by_role("button", name="Save mapping")).to_be_enabled()


def test_an_edit_superseded_by_one_that_could_not_read_its_mapping_is_not_shown(page, app):
    """Edit ENG, then Edit OPS before ENG's mapping has come: OPS's cannot be read, which is said with
    the form as it was. ENG's answer, come after, is that of an Edit the admin left: it is not shown
    either (the form stays as the message says it is)."""

    from playwright.sync_api import expect

    add_mapping("ENG", repo="eng-repo")
    add_mapping("OPS", repo="ops-repo")
    sign_in(page)
    fields = page.locator("#mapping-fields")
    repo = page.get_by_label("Repository", exact=True)

    held: list = []
    page.route("**/api/mappings/ENG", lambda route: held.append(route))
    with page.expect_request("**/api/mappings/ENG"):
        page.get_by_role("button", name="Edit mapping ENG").click()
    _edit_that_cannot_read_its_mapping(page, "OPS")

    with page.expect_response("**/api/mappings/ENG"):
        held.pop().continue_()
    expect(fields).to_be_enabled()
    expect(fields).not_to_have_attribute("aria-busy", "true")
    page.evaluate("() => new Promise((done) => setTimeout(done, 200))")  # (ENG's answer handled)
    expect(repo).to_have_value("")
    expect(page.locator("#mapping-editing")).to_be_hidden()
