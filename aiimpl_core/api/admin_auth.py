"""API blueprint: admin_auth."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("admin_auth", __name__)
