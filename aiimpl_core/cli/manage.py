"""CLI: manage commands."""
from __future__ import annotations
