"""The admin UI, served by the same Flask app."""
from __future__ import annotations

from flask import Flask


def register_ui(app: Flask) -> None:
    from .views import bp

    app.register_blueprint(bp)
