"""API blueprint: session."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("session", __name__)
