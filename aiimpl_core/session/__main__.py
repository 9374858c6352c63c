"""``python -m aiimpl_core.session run``: the session program without the orchestrator's CLI."""

from __future__ import annotations

from .cli import session_group

session_group(prog_name="aiimpl session")
