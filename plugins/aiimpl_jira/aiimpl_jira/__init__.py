"""AI-Implement plugin: Jira Cloud ticketing provider and /api/jira endpoints."""

from __future__ import annotations

__version__ = "0.1.0"
