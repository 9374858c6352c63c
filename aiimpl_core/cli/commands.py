"""Imports the modules that add the core's command groups to ``cli``."""
from __future__ import annotations

from . import check, demo, jobs, manage, openapi, session  # noqa: F401
