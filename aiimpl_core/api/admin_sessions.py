"""API blueprint: admin_sessions."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("admin_sessions", __name__)
