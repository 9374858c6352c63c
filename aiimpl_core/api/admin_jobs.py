"""API blueprint: admin_jobs."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("admin_jobs", __name__)
