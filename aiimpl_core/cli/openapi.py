"""CLI: openapi commands."""
from __future__ import annotations
