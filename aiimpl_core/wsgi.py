"""WSGI entry point for gunicorn: ``gunicorn aiimpl_core.wsgi:app``."""
from __future__ import annotations

from . import create_app

app = create_app()
