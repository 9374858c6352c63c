"""Masks the secrets the orchestrator knows in text a runner sends back.

The session program redacts what it reports, but a runner is not to be trusted with that alone:
before a runner's free text (result errors, log excerpts, comments, step details, status fields) is
stored or posted, every secret value this orchestrator could have handed to the job's session is
masked — the team's and global secrets, the model provider's credentials, and the orchestrator's own
sensitive settings — in plain, URL-encoded, base64 and line-split forms.

Building a redactor reads and decrypts every secret and compiles one pattern of all their forms,
several times the cost of the report it serves. Each process keeps the redactors it built, keyed by
the team, its mapping's last change and the state of the secrets it masks (the id and update time
of every global secret and of the team's own), read in one statement with each report (a
progress step's write compares it instead, and writes nothing when it changed): such a secret
added, changed or removed through the API or the CLI, or an edited mapping, gives a new key, so a
report is never redacted with stale values.
"""
from __future__ import annotations

import base64
import binascii
import re
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import jwt
from flask import current_app
from sqlalchemy import String, bindparam, cast, literal_column, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from ..auth import tokens
from ..config import secret_keys, secret_strings, sensitive_names
from ..database import PREPARED
from ..extensions import db
from ..orm import Job, Secret
from ..orm import Mapping as MappingRow
from ..session.redact import MASK, Redactor, map_strings
from . import secrets as secrets_service

#: redactors kept per process (a team and its mapping each; they are small)
CACHE_SIZE = 256


class _joined(FunctionElement):  # noqa: N801 - an SQL function, named as one
    """Strings joined by commas (``string_agg``, ``group_concat``), the comma written into the
    statement: SQLAlchemy's ``aggregate_strings`` renders it at every execution, a cost per report."""

    name = "joined"
    type = String()
    inherit_cache = True


@compiles(_joined)
def _joined_sqlite(element: _joined, compiler: Any, **kw: Any) -> str:
    return f"group_concat({compiler.process(element.clauses, **kw)}, ',')"


@compiles(_joined, "postgresql")
def _joined_postgresql(element: _joined, compiler: Any, **kw: Any) -> str:
    return f"string_agg({compiler.process(element.clauses, **kw)}, ',')"


def state_columns(team_key: Any, mapping_id: Any) -> tuple[Any, Any]:
    """The state a redactor is keyed by, as two scalar subqueries of text: the mapping's last
    change, and the id and update time of every global secret and every secret of the team (the
    ones its redactor masks), as one string (its order only matters to the cache's hit rate).
    Text, as the database writes it, so that a statement can compare a state read earlier with
    the state now exactly (a report's write does: ``callbacks._progress_upsert``).

    ``team_key`` and ``mapping_id`` are bound parameters, or subqueries reading them from the job:
    a report reads the same state with either, so the two compare equal. A secret of another team
    is not read, and its change keeps this team's redactors.
    """
    ordered = (
        select(Secret.id, Secret.updated_at)
        .where(or_(Secret.scope == secrets_service.GLOBAL, Secret.scope == team_key))
        .order_by(Secret.id)
        .subquery()
    )
    secrets_state = select(
        _joined(cast(ordered.c.id, String) + literal_column("':'") + cast(ordered.c.updated_at, String))
    ).scalar_subquery()
    mapping_state = (
        select(cast(MappingRow.updated_at, String)).where(MappingRow.id == mapping_id).scalar_subquery()
    )
    return mapping_state, secrets_state


_STATE = select(*state_columns(bindparam("team_key"), bindparam("mapping_id")))
# the job's team and mapping as subqueries of their own: a column of the outer ``jobs`` would not
# be correlated inside the secrets' derived table, which would then read every job
_OWNER_MAPPING, _OWNER_SECRETS = state_columns(
    select(Job.team_key).where(Job.id == bindparam("job_id")).scalar_subquery(),
    select(Job.mapping_id).where(Job.id == bindparam("job_id")).scalar_subquery(),
)
#: a job's team and mapping with the state :func:`redactor` is keyed by, in one statement
JOB_OWNER = select(
    Job.team_key, Job.mapping_id, Job.nonce_hash, _OWNER_MAPPING.label("mapping"),
    _OWNER_SECRETS.label("secrets"),
).where(Job.id == bindparam("job_id")).execution_options(**{PREPARED: True})
_EXTENSION = "aiimpl.redactors"
_OWNERS = "aiimpl.job-owners"
#: jobs whose team and mapping a process remembers (they never change for a job)
OWNERS_SIZE = 4096


@dataclass(frozen=True)
class Owner:
    """A job's team and mapping, with the state of the secrets and the mapping last seen."""

    team_key: str
    mapping_id: int | None
    state: tuple[Any, Any]
    nonce_hash: str | None = None


def remembered_owner(job_id: int) -> Owner | None:
    """The job's team and mapping with the state seen last, if this process has seen them."""
    cache = current_app.extensions.get(_OWNERS)
    return cache.get(job_id) if cache is not None else None


def remember_owner(job_id: int, owner: Owner) -> None:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    cache = app.extensions.get(_OWNERS)
    if cache is None:
        cache = app.extensions.setdefault(_OWNERS, _Lru(OWNERS_SIZE))
    cache.put(job_id, owner)


def known_secret_values(team_key: str, mapping_id: int | None) -> list[str]:
    """Every secret value the orchestrator could hand to a session of this team and mapping."""
    facade = current_app.extensions["aiimpl"]
    values: list[str] = list(secrets_service.values_for_team(team_key).values())
    mapping = db.session.get(MappingRow, mapping_id) if mapping_id else None
    if mapping is not None and mapping.provider in facade.ids("model"):
        model = facade.model(mapping.provider)
        view = mapping.view()
        env = model.session_env(view)
        values += [env[name] for name in model.secret_env_names(view) if env.get(name)]
    values += [value for _name, value in sensitive_settings()]
    return values


def sensitive_settings() -> list[tuple[str, str]]:
    """The orchestrator's own sensitive settings that are set (the core's and every installed
    plugin's: tracker keys, backend tokens…), as (name, value) in the order of their names; a
    setting of several values (the earlier secret keys) once for each."""
    facade = current_app.extensions["aiimpl"]
    return [(name, value) for name in sorted(sensitive_names(facade.config_vars()))
            for value in secret_strings(name, current_app.config.get(name))]


_CONFIG_EXTENSION = "aiimpl.config-redactor"


def config_redactor() -> Redactor:
    """A redactor of the orchestrator's own sensitive settings (the core's and every plugin's:
    tracker keys, backend tokens…), for remote text shown to operators (kept per app and values)."""
    values = tuple(sorted(value for _name, value in sensitive_settings()))
    kept = current_app.extensions.get(_CONFIG_EXTENSION)
    if kept is None or kept[0] != values:
        kept = current_app.extensions[_CONFIG_EXTENSION] = (values, Redactor(values))
    return kept[1]


class _Lru:
    """A bounded map, least recently used first out; thread-safe."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[Hashable, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self.lock:
            found = self.items.get(key)
            if found is not None:
                self.items.move_to_end(key)
            return found

    def put(self, key: Hashable, value: Any) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


def redactor(team_key: str, mapping_id: int | None, *, state: tuple[Any, Any] | None = None) -> Redactor:
    """The redactor of a team's sessions (built again whenever the secrets or the mapping change).

    :param state: the mapping's and the secrets' state when the caller read it already
        (:data:`JOB_OWNER`).
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    cache = app.extensions.get(_EXTENSION)
    if cache is None:
        cache = app.extensions.setdefault(_EXTENSION, _Lru(CACHE_SIZE))
    if state is None:
        state = tuple(db.session.execute(_STATE, {"team_key": team_key, "mapping_id": mapping_id}).one())
    key = (team_key, mapping_id, *state)
    found = cache.get(key)
    if found is None:
        found = Redactor(known_secret_values(team_key, mapping_id))
        cache.put(key, found)
    return found


def has_text(data: Any) -> bool:
    """Whether a JSON-like value holds a string anywhere (else there is nothing to redact)."""
    if isinstance(data, str):
        return True
    if isinstance(data, dict):
        return bool(data)  # its keys are text (Redactor.data masks them too)
    if isinstance(data, list):
        return any(has_text(v) for v in data)
    return False


#: a run of base64url segments and the dots between them, where a JSON Web Token may stand
_DOTTED_RUN = re.compile(r"[A-Za-z0-9_.-]+")


def jwt_spans(text: str) -> Iterator[tuple[int, int]]:
    r"""Where ``text`` holds what may be a JSON Web Token, left to right: a header and a payload
    that are base64url JSON objects (``eyJ`` and at least two characters more; the header may
    start inside its segment), then a signature of at least 16 characters, each segment whole.

    What the pattern ``eyJ[A-Za-z0-9_-]{2,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{16,}`` finds, in
    one pass over each run of segments: that pattern tried every ``eyJ`` of a run against the rest
    of it, a quadratic search (16 s on 200 KB of ``eyJ``, on a runner's text before it is stored).
    """
    for run in _DOTTED_RUN.finditer(text):
        if "eyJ" not in run.group(0):
            continue
        segments = run.group(0).split(".")
        starts = [run.start()]
        for segment in segments[:-1]:
            starts.append(starts[-1] + len(segment) + 1)
        i = 0
        while i + 2 < len(segments):
            header, payload, signature = segments[i : i + 3]
            at = header.find("eyJ")  # (the first: a later one leaves fewer characters after it)
            if (0 <= at <= len(header) - 5 and payload.startswith("eyJ") and len(payload) >= 5
                    and len(signature) >= 16):
                yield starts[i] + at, starts[i + 2] + len(signature)
                i += 3
            else:
                i += 1
#: a GitHub token by its documented prefix (an installation's ``ghs_``, a user's ``ghu_``, an OAuth
#: app's ``gho_``, a refresh ``ghr_``, a classic personal ``ghp_``, a fine-grained ``github_pat_``),
#: wherever it starts (after an escaped line break ``\\n``, a ``%3A``, a variable's name and ``_``)
_GITHUB_TOKEN = re.compile(r"gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}")
#: base64 long enough to hold a GitHub token (a ``Basic`` header's ``x-access-token:ghs_…``, an
#: encoded file of a container's environment)
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")
#: a nonce's shape (``secrets.token_urlsafe(32)``: 43 URL-safe characters), on its own
_NONCE = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")


def _encoded_github_token(match: re.Match[str]) -> str:
    """A base64 run masked whole when what it encodes holds a GitHub token (read from each of the
    four places a run cut from longer text can begin a group)."""
    run = match.group(0).rstrip("=")
    for start in range(4):
        chunk = run[start:]
        try:
            decoded = base64.b64decode(chunk[: len(chunk) - len(chunk) % 4], validate=True)
        except binascii.Error:
            continue
        if _GITHUB_TOKEN.search(decoded.decode("latin-1")):
            return MASK
    return match.group(0)


def github_tokens_masked(text: str) -> str:
    """``text`` with every GitHub token masked by its shape, plain or inside base64 (a ``Basic``
    header), whoever minted it."""
    if "gh" in text:
        text = _GITHUB_TOKEN.sub(MASK, text)
    if len(text) >= 40:
        text = _BASE64_RUN.sub(_encoded_github_token, text)
    return text


class JobRedactor:
    """The redactor of a job's team (:func:`redactor`), which also masks the job's own run
    credentials, which no secret row holds: a run token this orchestrator signed (any job's: its
    signature is checked, its expiry and audience are not), the job's nonce (stored only as its
    hash: a nonce-shaped word is masked when its hash is the job's) and a GitHub token (the
    repository token ``POST /api/token`` hands the session, minted by whichever worker answered
    it: masked by its shape). A session masks them in what it reports; a backend's log excerpt (a
    container that printed its environment) or a plugin's error need not have."""

    def __init__(self, base: Redactor, nonce_hash: str | None, keys: tuple[str, ...]) -> None:
        self.base = base
        self.nonce_hash = nonce_hash
        self.keys = keys  # (the secret key, and its fallbacks: a run dispatched before the key changed)

    def _tokens_masked(self, text: str) -> str:
        """``text`` with every run token signed with one of the keys masked."""
        parts, done = [], 0
        for start, end in jwt_spans(text):
            parts += [text[done:start], self._token(text[start:end])]
            done = end
        return "".join(parts) + text[done:] if parts else text

    def _token(self, candidate: str) -> str:
        for key in self.keys:
            try:
                jwt.decode(candidate, key, algorithms=[tokens.ALGORITHM],
                           options={"verify_exp": False, "verify_aud": False, "verify_iat": False})
            except jwt.PyJWTError:
                continue
            return MASK
        return candidate

    def _nonce(self, match: re.Match[str]) -> str:
        return MASK if tokens.hash_nonce(match.group(0)) == self.nonce_hash else match.group(0)

    def text(self, value: str | None) -> str:
        """``value`` with the team's secrets and the job's run credentials masked."""
        out = self.base.text(value)
        if "eyJ" in out:
            out = self._tokens_masked(out)
        out = github_tokens_masked(out)
        if self.nonce_hash and len(out) >= 43:
            out = _NONCE.sub(self._nonce, out)
        return out

    def data(self, value: Any, keep: tuple[str, ...] = ()) -> Any:
        return map_strings(value, self.text, keep)


def redactor_for(job: Job | Owner) -> JobRedactor:
    """The redactor of a job's reports: its team's secrets and its own run credentials (from the
    job, or from the job's owner as :data:`JOB_OWNER` read it, with the state read with it)."""
    state = job.state if isinstance(job, Owner) else None
    return JobRedactor(redactor(job.team_key, job.mapping_id, state=state), job.nonce_hash,
                       secret_keys(current_app.config))


def redact_data(job: Job, data: Any, keep: tuple[str, ...] = ()) -> Any:
    """``data`` (a JSON-like value) with every secret the job could know masked (without text in
    it, there is nothing to mask, and the redactor's state is not read)."""
    if not has_text(data):
        return data
    return redactor_for(job).data(data, keep=keep)
