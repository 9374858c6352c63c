"""Job nonces: how ``/api/token``, ``/api/status`` and ``/api/step-report`` find their job.

A session holds its job's nonce; the database holds only its SHA-256 (``Job.nonce_hash``). A nonce
opens its job while the job is not terminal.
"""

from __future__ import annotations

from sqlalchemy import select

from ..extensions import db
from ..orm import Job
from ..types import ACTIVE_STATUSES
from .tokens import hash_nonce

INVALID_NONCE = "Invalid or expired nonce"


def active_job_for_nonce(nonce: str, *, for_update: bool = False) -> Job | None:
    """The non-terminal job whose nonce hash matches ``nonce``, or ``None``.

    The lookup is by hash (an index probe on a unique column), so its timing says nothing about
    how close a guess came.
    """
    if not nonce:
        return None
    query = select(Job).where(
        Job.nonce_hash == hash_nonce(nonce),
        Job.status.in_([s.value for s in ACTIVE_STATUSES]),
    )
    if for_update:
        query = query.with_for_update()
    return db.session.scalar(query)
