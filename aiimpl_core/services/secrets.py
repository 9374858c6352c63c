"""Team and global secrets: encrypted at rest with a key derived from ``AIIMPL_SECRET_KEY`` (and
read with one derived from a fallback, ``AIIMPL_SECRET_KEY_FALLBACKS``, while the key changes).

Values leave this module only towards a session's environment; the API lists names and times.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import re

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import Flask, current_app, has_app_context
from sqlalchemy import select, update

from .. import logs
from ..config import secret_keys
from ..database import serialized
from ..errors import ConfigError, NotFound, ValidationError
from ..extensions import db
from ..orm import Mapping, Secret, iso_z, utcnow
from ..schemas.common import is_given, require_strings
from .mappings import lock_mapping

log = logging.getLogger(__name__)

GLOBAL = ""
#: set in the app's config when ``AIIMPL_SECRET_KEY`` was not given and the process made one up
KEY_MADE_UP = "AIIMPL_SECRET_KEY_MADE_UP"
NAME_RE = re.compile(r"[A-Za-z0-9_]+")


def _fernet_of(key: str) -> Fernet:
    digest = hashlib.sha256(b"aiimpl-secrets:" + key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def _keys(app: Flask | None = None) -> list[Fernet]:
    """The current key's, then each fallback's."""
    return [_fernet_of(key) for key in secret_keys((app or current_app).config)]


def _fernet(app: Flask | None = None) -> MultiFernet:
    """Encrypts with the current key; decrypts with it or a fallback."""
    return MultiFernet(_keys(app))


def team_prefix(team_key: str) -> str:
    return f"{team_key}_"


#: the longest value stored (GitHub's own limit for an Actions secret is 48 KB)
MAX_VALUE = 65_536


def validate(name: object, value: object, *, scope: str) -> tuple[str, str]:
    """Apply the reference's rules; returns the name and value or raises with its message.

    ``name and value are required`` is the reference's answer to one that is missing, null, empty
    or blank (spaces only, as a mapping's fields); one that is there but no string is named.
    """
    if not (is_given(name) and is_given(value)):
        raise ValidationError("name and value are required")
    require_strings({"name": name, "value": value})
    if not NAME_RE.fullmatch(name):
        raise ValidationError("name must contain only letters, digits, and underscores")
    if len(value) > MAX_VALUE:
        raise ValidationError(f"value must be at most {MAX_VALUE:,} characters")
    if scope == GLOBAL and (prefix := _colliding_prefix(name, _team_keys())):
        raise ValidationError(f"Secret name must not start with a team key prefix ({prefix})")
    return name, value


def _team_keys() -> list[str]:
    return sorted(db.session.scalars(select(Mapping.team_key)).all())


def _colliding_prefix(name: str, teams: list[str]) -> str | None:
    """The first team key prefix (``ENG_``) ``name`` starts with, in any case."""
    for team in teams:
        prefix = team_prefix(team)
        if name.upper().startswith(prefix.upper()):
            return prefix
    return None


def colliding_global_names() -> list[tuple[str, str]]:
    """Global secrets (name, prefix) whose name starts with a team key prefix: stored before that
    team's mapping was made, they can be deleted but no longer set (``aiimpl check`` says so)."""
    teams = _team_keys()
    names = db.session.scalars(select(Secret.name).where(Secret.scope == GLOBAL).order_by(Secret.name)).all()
    return [(name, prefix) for name in names if (prefix := _colliding_prefix(name, teams))]


def list_secrets(scope: str) -> list[dict[str, object]]:
    rows = db.session.scalars(select(Secret).where(Secret.scope == scope).order_by(Secret.name)).all()
    return [{"name": r.name, "updatedAt": iso_z(r.updated_at), "createdAt": iso_z(r.created_at)}
            for r in rows]


def set_secret(scope: str, name: str, value: str) -> dict[str, object]:
    """Store a secret encrypted; refused while the process made up its key (no other process, nor
    this one once restarted, could ever read the value back).

    :raises ConfigError: ``AIIMPL_SECRET_KEY`` is not set.
    """
    if current_app.config.get(KEY_MADE_UP):
        raise ConfigError("AIIMPL_SECRET_KEY is not set: a secret stored now could never be read back; "
                          "set it (the same for every process) and try again")
    token = _fernet().encrypt(value.encode()).decode()
    with serialized() as session:  # read and written by one writer (SQLite: no stale read to write on)
        if scope != GLOBAL:
            # the team's mapping is there as the secret is written, not only when the request
            # began: one deleted meanwhile took the team's secrets with it, and a secret stored
            # after that would reach the next mapping created for the team
            lock_mapping(scope)
            if session.scalar(select(Mapping.id).where(Mapping.team_key == scope)) is None:
                raise NotFound("Team not found")
        row = session.scalar(select(Secret).where(Secret.scope == scope, Secret.name == name))
        if row is None:
            row = Secret(scope=scope, name=name, value_encrypted=token)
            session.add(row)
        else:
            row.value_encrypted = token
            row.updated_at = utcnow()
    return {"name": row.name, "updatedAt": iso_z(row.updated_at), "createdAt": iso_z(row.created_at)}


def delete_secret(scope: str, name: str) -> None:
    with serialized() as session:
        if scope != GLOBAL:
            lock_mapping(scope)  # not deleted as its mapping's deletion deletes it (two deletes of one row)
        row = session.scalar(select(Secret).where(Secret.scope == scope, Secret.name == name))
        if row is None:
            raise NotFound("Secret not found")
        session.delete(row)


def values_for_team(team_key: str) -> dict[str, str]:
    """Global secrets overlaid with the team's own (team values win)."""
    # (the global scope, "", sorts before every team's: the team's own come last and win)
    return {name: value for _scope, name, value in stored_values(team_key)}


def stored_values(team_key: str) -> list[tuple[str, str, str]]:
    """The global secrets, then the team's own, as (scope, name, value), read in one statement;
    those the current key cannot decrypt are left out, and logged (the key was changed: the value
    is unreadable, not exposed)."""
    f = _fernet()
    out = []
    rows = db.session.scalars(select(Secret).where(Secret.scope.in_({GLOBAL, team_key}))
                              .order_by(Secret.scope, Secret.name))
    for row in rows:
        try:
            value = f.decrypt(row.value_encrypted.encode()).decode()
        except InvalidToken:
            _unreadable(row)
            continue
        logs.mask(value)
        out.append((row.scope, row.name, value))
    return out


def _unreadable(row: Secret) -> None:
    why, what = undecryptable(1)
    log.warning("the secret %s (%s) cannot be decrypted %s: %s", row.name, row.scope or "global", why, what)


def undecryptable(count: int) -> tuple[str, str]:
    """Why ``count`` stored secrets cannot be decrypted, and what to do. With no key set, this
    process's random key reads none of them, and setting them again would not help."""
    if current_app.config.get(KEY_MADE_UP):
        return ("as AIIMPL_SECRET_KEY is not set (this process has a random key of its own)",
                "set AIIMPL_SECRET_KEY to the key they were stored with")
    return ("with the current AIIMPL_SECRET_KEY (was the key changed?)",
            f"set {'it' if count == 1 else 'them'} again, or give the key "
            f"{'it was' if count == 1 else 'they were'} stored with in AIIMPL_SECRET_KEY_FALLBACKS")


def unreadable() -> list[tuple[str, str]]:
    """The secrets (scope, name) neither the current key nor a fallback can decrypt."""
    return [(scope, name) for scope, name, read_by in by_key() if read_by is None]


def by_key() -> list[tuple[str, str, str | None]]:
    """Every secret (scope, name) with the key that decrypts it: ``current``, ``fallback`` (to be
    encrypted with the current key by :func:`rekey` before that fallback is removed) or ``None``
    (``aiimpl check`` reports both)."""
    keys = _keys()
    rows = db.session.execute(select(Secret.scope, Secret.name, Secret.value_encrypted)
                              .order_by(Secret.scope, Secret.name))
    out: list[tuple[str, str, str | None]] = []
    for row in rows:
        read = _read_with(row.value_encrypted.encode(), keys)
        out.append((row.scope, row.name, None if read is None else "fallback" if read[0] else "current"))
    return out


def _read_with(token: bytes, keys: list[Fernet]) -> tuple[int, bytes] | None:
    """Which of ``keys`` decrypts ``token`` (its index: 0 is the current key) and the value;
    ``None`` when none does."""
    for index, key in enumerate(keys):
        try:
            return index, key.decrypt(token)
        except InvalidToken:
            continue
    return None


def rekey() -> tuple[int, list[tuple[str, str]]]:
    """Encrypt with the current key every secret only a fallback decrypts, in one transaction;
    how many were, and the secrets (scope, name) no key decrypts (left as they are).

    :raises ConfigError: ``AIIMPL_SECRET_KEY`` is not set.
    """
    if current_app.config.get(KEY_MADE_UP):
        raise ConfigError("AIIMPL_SECRET_KEY is not set: give the key the secrets are to be encrypted with")
    keys = _keys()
    done, lost = 0, []
    with serialized() as session:
        rows = session.execute(select(Secret.id, Secret.scope, Secret.name, Secret.value_encrypted)
                               .order_by(Secret.scope, Secret.name)).all()
        for row in rows:
            read = _read_with(row.value_encrypted.encode(), keys)
            if read is None:
                lost.append((row.scope, row.name))
                continue
            if read[0] == 0:
                continue  # the current key's already
            # compare-and-set: a value set meanwhile (PostgreSQL) is the current key's already; the
            # time it was set stays, as the value did not change
            done += session.execute(
                update(Secret)
                .where(Secret.id == row.id, Secret.value_encrypted == row.value_encrypted)
                .values(value_encrypted=keys[0].encrypt(read[1]).decode(), updated_at=Secret.updated_at),
                execution_options={"synchronize_session": False},
            ).rowcount
    return done, lost


def read_value(app: Flask, name: str, scope: str | None = None) -> str | None:
    """One secret's value (providers read their credentials this way); ``None`` when absent."""
    if not has_app_context():
        with app.app_context():
            return read_value(app, name, scope)
    row = db.session.scalar(select(Secret).where(Secret.scope == (scope or GLOBAL), Secret.name == name))
    if row is None:
        return None
    try:
        value = _fernet(app).decrypt(row.value_encrypted.encode()).decode()
    except InvalidToken:
        _unreadable(row)
        return None
    logs.mask(value)
    return value


