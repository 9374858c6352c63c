"""Job nonces: how ``/api/token``, ``/api/status`` and ``/api/step-report`` find their job.

A session holds its job's nonce; the database holds only its SHA-256 (``Job.nonce_hash``). A nonce
opens its job while the job is not terminal.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select

from ..database import PREPARED
from ..extensions import db
from ..orm import Job
from ..types import ACTIVE_STATUSES
from .tokens import hash_nonce

INVALID_NONCE = "Invalid or expired nonce"

# built once: sessions call on every status event and step report
_ACTIVE_BY_HASH = select(Job).where(
    Job.nonce_hash == bindparam("nonce_hash"), Job.status.in_([s.value for s in ACTIVE_STATUSES])
).execution_options(**{PREPARED: True})
#: (``FOR NO KEY UPDATE`` on PostgreSQL: it waits for, and holds off, another transaction's change
#: of the job, such as its ending, yet not the rows that only refer to it)
_ACTIVE_BY_HASH_FOR_UPDATE = _ACTIVE_BY_HASH.with_for_update(key_share=True)


def active_job_for_nonce(nonce: str, *, for_update: bool = False) -> Job | None:
    """The non-terminal job whose nonce hash matches ``nonce``, or ``None``.

    The lookup is by hash (an index probe on a unique column), so its timing says nothing about
    how close a guess came.
    """
    if not nonce:
        return None
    query = _ACTIVE_BY_HASH_FOR_UPDATE if for_update else _ACTIVE_BY_HASH
    return db.session.scalar(query, {"nonce_hash": hash_nonce(nonce)})
