"""API blueprint: admin_secrets."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("admin_secrets", __name__)
