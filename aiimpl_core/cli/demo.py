"""CLI: demo commands."""
from __future__ import annotations
