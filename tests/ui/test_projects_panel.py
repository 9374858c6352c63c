"""The Projects panel in a browser: syncing workflows, clearing a field, field errors described, a
form kept across a sign-in."""
from __future__ import annotations

import pytest

from aiimpl_core.testing.fakes import add_mapping

from .test_browser import fill_mapping, save_after_the_session_ended, sign_in

pytestmark = pytest.mark.browser


def test_sync_workflows_says_which_files_in_words(page, app):
    add_mapping("ENG")
    sign_in(page)
    page.locator('#mappings-table tr[data-team="ENG"]').get_by_role("button", name="Sync workflows").click()
    flash = page.locator("#flash.ok")
    flash.wait_for()
    assert flash.inner_text() == "Workflows of ENG synced: unchanged .github/workflows/ai-implement.yml"


def test_a_syncs_warning_is_shown_as_an_error_is(page, app, runner):
    """Files written whose runs will fail (AIIMPL_PUBLIC_URL only this host reaches): said in the
    error's colour, not as a plain success that is easily missed."""
    runner.sync_warnings = ("AIIMPL_PUBLIC_URL names 127.0.0.1, an address of this host only.",)
    add_mapping("ENG", execution_mode="fly-machines")
    sign_in(page)
    page.locator('#mappings-table tr[data-team="ENG"]').get_by_role("button", name="Sync workflows").click()
    flash = page.locator("#flash.error")
    flash.wait_for()
    assert flash.inner_text() == (
        "Workflows of ENG synced: unchanged .github/workflows/ai-implement.yml. "
        "Warning: AIIMPL_PUBLIC_URL names 127.0.0.1, an address of this host only."
    )


def test_a_save_that_fails_takes_away_what_the_last_one_said(page, app):
    """"Mapping WEB saved" stayed above the next save's field error, as if that one had succeeded."""
    sign_in(page)
    fill_mapping(page, "WEB", "web")
    page.get_by_label("Ticketing (JSON object)").fill('{"provider": "fake-tracker"}')
    page.get_by_role("button", name="Save mapping").click()
    page.locator("#flash.ok").get_by_text("Mapping WEB saved").wait_for()
    fill_mapping(page, "OPS", "ops")
    page.get_by_label("Ticketing (JSON object)").fill('{"provider": "fake-tracker"}')
    page.get_by_label("Machine CPUs").fill("0")
    page.get_by_role("button", name="Save mapping").click()
    page.get_by_text("machineCpus must be a positive integer").wait_for()
    assert page.locator("#flash").inner_text() == ""


def test_a_cap_refused_leaves_the_box_showing_the_cap_in_force(page, app):
    """The refused value stayed in the box, the stored cap unchanged, until the page was reloaded."""
    from playwright.sync_api import expect

    from aiimpl_core.services import mappings

    add_mapping("ENG", max_in_progress=3)
    sign_in(page)
    row = page.locator('#mappings-table tr[data-team="ENG"]')
    row.get_by_label("Cap for ENG").fill("abc")
    row.get_by_role("button", name="Set cap").click()
    page.locator("#flash.error").get_by_text(
        "Cap of ENG not changed: maxInProgressAiIssues must be a positive integer").wait_for()
    expect(row.get_by_label("Cap for ENG")).to_have_value("3")
    assert mappings.get("ENG")["maxInProgressAiIssues"] == 3


def test_a_field_emptied_in_the_edit_form_is_cleared(page, app):
    from aiimpl_core.services import mappings

    add_mapping("ENG", machine_cpus=4, planning_workflow_file="plan.yml", extra_env={"NODE_ENV": "test"})
    sign_in(page)
    page.locator('#mappings-table tr[data-team="ENG"]').get_by_role("button", name="Edit").click()
    page.get_by_text("Editing the mapping of ENG").wait_for()  # (Edit reads the mapping anew)
    assert page.get_by_label("Machine CPUs").input_value() == "4"
    page.get_by_label("Machine CPUs").fill("")
    page.get_by_label("Planning workflow file").fill("")
    page.get_by_label("Extra environment (JSON object)").fill("")
    page.get_by_role("button", name="Save mapping").click()
    page.get_by_text("Mapping ENG saved").wait_for()
    stored = mappings.get("ENG")
    assert (stored["machineCpus"], stored["planningWorkflowFile"], stored["extraEnv"]) == (None, None, {})
    assert stored["owner"] == "acme"


@pytest.mark.parametrize("typed", ["", "  "])
def test_set_cap_with_an_emptied_field_removes_the_cap(page, app, typed):
    from playwright.sync_api import expect

    from aiimpl_core.extensions import db
    from aiimpl_core.services import mappings

    add_mapping("ENG", max_in_progress=3)
    sign_in(page)
    row = page.locator('#mappings-table tr[data-team="ENG"]')
    cap = row.get_by_label("Cap for ENG")
    assert cap.input_value() == "3"
    cap.fill(typed)
    cap.evaluate("(input) => { input.dataset.typed = '1'; }")
    row.get_by_role("button", name="Set cap").click()
    page.locator("#flash.ok").get_by_text("Cap of ENG removed").wait_for()
    assert mappings.get("ENG")["maxInProgressAiIssues"] is None
    row.locator("input.cap:not([data-typed])").wait_for()  # the table is read again
    expect(row.get_by_label("Cap for ENG")).to_have_value("")
    row.get_by_label("Cap for ENG").fill("2")  # and a number still sets one
    row.get_by_role("button", name="Set cap").click()
    page.locator("#flash.ok").get_by_text("Cap of ENG set to 2").wait_for()
    db.session.rollback()  # the server wrote it: end this session's read of the database
    assert mappings.get("ENG")["maxInProgressAiIssues"] == 2


def test_a_field_error_is_the_description_of_its_field(page, app):
    sign_in(page)
    fill_mapping(page, "ENG", "api")
    page.get_by_label("Machine CPUs").fill("0")
    page.get_by_role("button", name="Save mapping").click()
    cpus = page.get_by_label("Machine CPUs")
    error = page.locator('.field-error[data-for="machineCpus"]')
    error.get_by_text("machineCpus must be a positive integer").wait_for()
    described = page.evaluate(
        "(el) => document.getElementById(el.getAttribute('aria-describedby'))?.textContent",
        cpus.element_handle(),
    )
    assert described == "machineCpus must be a positive integer"
    cpus.fill("2")
    page.get_by_label("Ticketing (JSON object)").fill('{"provider": "fake-tracker"}')
    page.get_by_role("button", name="Save mapping").click()
    page.get_by_text("Mapping ENG saved").wait_for()
    assert cpus.get_attribute("aria-describedby") is None


def test_what_was_typed_survives_the_end_of_the_admin_session(page, app):
    """The session ends while a mapping is being typed (it lasts 12 hours): saving leads to the
    sign-in, and once signed in again the form holds what was typed."""
    from aiimpl_core.services import mappings

    sign_in(page)
    fill_mapping(page, "WEB", "web", "trunk")
    page.get_by_label("Ticketing (JSON object)").fill('{"provider": "fake-tracker"}')
    save_after_the_session_ended(page)
    assert page.get_by_label("Team key").input_value() == "WEB"
    assert page.get_by_label("Default branch").input_value() == "trunk"
    page.get_by_text("Signed in again: the form holds what you had typed.").wait_for()
    page.get_by_role("button", name="Save mapping").click()
    page.get_by_text("Mapping WEB saved").wait_for()
    assert mappings.get("WEB")["defaultBranch"] == "trunk"
    # kept once: a later visit starts empty
    page.reload()
    assert page.get_by_label("Team key").input_value() == ""
