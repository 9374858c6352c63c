"""API blueprint: admin_runner_mode."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("admin_runner_mode", __name__)
