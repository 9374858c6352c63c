"""Masks the secrets the orchestrator knows in text a runner sends back.

The session program redacts what it reports, but a runner is not to be trusted with that alone:
before a runner's free text (result errors, log excerpts, comments, step details, status fields) is
stored or posted, every secret value this orchestrator could have handed to the job's session is
masked — the team's and global secrets, the model provider's credentials, and the orchestrator's own
sensitive settings — in plain, URL-encoded, base64 and line-split forms.
"""
from __future__ import annotations

from typing import Any

from flask import current_app

from ..config import sensitive_names
from ..extensions import db
from ..orm import Job
from ..orm import Mapping as MappingRow
from ..session.redact import Redactor
from . import secrets as secrets_service


def known_secret_values(job: Job) -> list[str]:
    facade = current_app.extensions["aiimpl"]
    values: list[str] = list(secrets_service.values_for_team(job.team_key).values())
    mapping = db.session.get(MappingRow, job.mapping_id) if job.mapping_id else None
    if mapping is not None and mapping.provider in facade.ids("model"):
        model = facade.model(mapping.provider)
        view = mapping.view()
        env = model.session_env(view)
        values += [env[name] for name in model.secret_env_names(view) if env.get(name)]
    for name in sensitive_names(facade.config_vars()):
        value = current_app.config.get(name)
        if isinstance(value, str) and value:
            values.append(value)
    return values


def redactor_for(job: Job) -> Redactor:
    return Redactor(known_secret_values(job))


def redact_data(job: Job, data: Any, keep: tuple[str, ...] = ()) -> Any:
    """``data`` (a JSON-like value) with every secret the job could know masked."""
    return redactor_for(job).data(data, keep=keep)
