"""API blueprint: runner."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("runner", __name__)
