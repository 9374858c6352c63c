"""Admin UI pages: server-rendered shells; every action goes through the documented HTTP API.

The pages hold no data of their own: ``static/app.js`` signs in with ``POST /api/auth``, keeps the
session token in the browser's session storage, and reads and writes through the ``/api/*``
endpoints, refreshing the panels that change by themselves (jobs, issues, blockers, outbox, sessions).
"""
from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, current_app, redirect, render_template, url_for

from ..services import mappings

bp = Blueprint("ui", __name__, template_folder="templates", static_folder="static",
               static_url_path="/ui/static")

PANELS = (
    ("projects", "Projects"),
    ("issues", "Issues"),
    ("blockers", "Blockers"),
    ("jobs", "Dispatch log"),
    ("outbox", "Outbox"),
    ("checks", "Checks"),
    ("sessions", "Sessions"),
    ("secrets", "Secrets"),
    ("runner-mode", "Runner mode"),
    ("jira", "Jira settings"),
)


def _panels() -> list[tuple[str, str]]:
    jira_installed = "jira" in current_app.extensions["aiimpl"].ids("ticketing")
    return [(slug, title) for slug, title in PANELS if slug != "jira" or jira_installed]


def _installed() -> dict[str, Any]:
    """What the forms offer, from the plugins installed: the placeholders of a mapping's fields
    (the defaults a field left empty takes, else an example), the backends with workflow files
    (Sync workflows), and the runner modes an installed backend runs."""
    facade = current_app.extensions["aiimpl"]
    modes, trackers = mappings.execution_modes(), mappings.tracker_ids()
    default_mode = mappings.default_execution_mode()
    return {
        "sync_backends": facade.workflow_sync_backends(),
        "runner_modes": facade.runner_modes(),
        "execution_placeholder": default_mode or (f"e.g. {modes[0]}" if modes else ""),
        "provider_placeholder": mappings.default_provider() or "",
        "ticketing_placeholder": json.dumps({"provider": trackers[0]}) if trackers else "",
    }


@bp.get("/")
def index():  # noqa: ANN201
    return redirect(url_for("ui.panel", name="projects"))


@bp.get("/ui/")
def ui_root():  # noqa: ANN201
    return redirect(url_for("ui.panel", name="projects"))


@bp.get("/ui/signin")
def signin():  # noqa: ANN201
    return render_template("signin.html", banner=current_app.config.get("AIIMPL_UI_BANNER"))


@bp.get("/ui/<name>")
def panel(name: str):  # noqa: ANN201
    panels = _panels()
    if name not in dict(panels):
        # a page of the UI, not the API's JSON: the panels stay one click away
        reason = ("The Jira settings panel appears when the Jira plugin (aiimpl-jira) is installed and "
                  "not disabled (AIIMPL_DISABLED_PLUGINS)."
                  if name == "jira" else f"There is no page /ui/{name}: choose a panel above.")
        return render_template("not_found.html", panels=panels, title="Page not found", reason=reason,
                               banner=current_app.config.get("AIIMPL_UI_BANNER")), 404
    return render_template(
        f"panel_{name.replace('-', '_')}.html",
        **_installed(),
        panels=panels,
        active=name,
        title=dict(panels)[name],
        banner=current_app.config.get("AIIMPL_UI_BANNER"),
    )
