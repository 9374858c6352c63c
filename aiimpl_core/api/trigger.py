"""API blueprint: trigger."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("trigger", __name__)
