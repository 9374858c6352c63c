"""CLI: jobs commands."""
from __future__ import annotations
