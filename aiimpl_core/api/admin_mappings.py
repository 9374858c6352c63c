"""API blueprint: admin_mappings."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("admin_mappings", __name__)
