"""API blueprint: webhook."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("webhook", __name__)
