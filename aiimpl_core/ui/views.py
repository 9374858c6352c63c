"""Admin UI pages."""
from __future__ import annotations

from flask import Blueprint, redirect

bp = Blueprint("ui", __name__, template_folder="templates", static_folder="static", static_url_path="/ui/static")


@bp.get("/")
def index():  # noqa: ANN201
    return redirect("/healthz")
