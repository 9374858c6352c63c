"""A host whose clock is off the database server's is named by ``aiimpl check`` and warned of by
the poll loop: leases, back-offs and the reconciler's windows compare times every host writes."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from aiimpl_core.database import CLOCK_TOLERANCE, clock_skew
from aiimpl_core.extensions import db
from aiimpl_core.orm import utcnow
from aiimpl_core.services import poller
from aiimpl_core.services.checks import run_checks
from aiimpl_core.services.poller import Poller, clock_problem


def _postgres_only() -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's clock is this host's")


def _host_off_by(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    monkeypatch.setattr(poller, "utcnow", lambda: utcnow() + timedelta(seconds=seconds))


def _said(message: str) -> tuple[float, str]:
    """The seconds and the direction a clock line says: the figure is measured, so a loaded
    machine may read 59.9s for a host set 60s ahead."""
    found = re.match(r"this host's clock is (\d+\.\d)s (ahead of|behind) the database server's", message)
    assert found, message
    return float(found[1]), found[2]


#: how far a figure said may be from the offset set: it carries the measurement's spread (half a
#: round trip to the database, which a loaded machine makes long)
SPREAD = 2


def _clock_rows() -> list[tuple[str, str]]:
    return [(r.status, r.detail) for r in run_checks() if (r.kind, r.name) == ("database", "clock")]


def test_the_measured_skew_is_the_host_clocks_offset(app):
    _postgres_only()
    skew, error = clock_skew(lambda: utcnow() + timedelta(seconds=90))
    assert abs(skew - 90) <= error + 1
    skew, error = clock_skew(utcnow)
    assert abs(skew) <= error + 1
    assert not db.session().in_transaction()


def test_sqlite_has_no_clock_of_its_own(app):
    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite only")
    assert clock_skew(lambda: utcnow() + timedelta(hours=1)) is None
    assert clock_problem(lambda: utcnow() + timedelta(hours=1)) is None


@pytest.mark.parametrize(("seconds", "words"), [(40, "ahead of"), (-40, "behind")])
def test_a_host_clock_off_the_databases_fails_the_check(app, monkeypatch, seconds, words):
    _postgres_only()
    assert _clock_rows() == []  # in sync: no line, as for the stored secrets
    _host_off_by(monkeypatch, seconds)
    [(status, detail)] = _clock_rows()
    assert status == "failed"
    figure, direction = _said(detail)
    assert direction == words and abs(figure - 40) <= SPREAD
    assert "NTP" in detail


def test_within_the_tolerance_is_not_a_problem(app):
    _postgres_only()
    assert clock_problem(lambda: utcnow() + timedelta(seconds=CLOCK_TOLERANCE / 2)) is None
    assert clock_problem(lambda: utcnow() - timedelta(seconds=CLOCK_TOLERANCE * 3)) is not None


def test_the_poll_loop_warns_once_before_its_first_cycle(app, monkeypatch, caplog):
    _postgres_only()
    _host_off_by(monkeypatch, -120)
    loop = Poller(60)
    loop.run_once()
    loop.run_once()
    warned = [r for r in caplog.records if "this host's clock is" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelname == "WARNING"
    figure, direction = _said(warned[0].getMessage())
    assert direction == "behind" and abs(figure - 120) <= SPREAD


def test_a_database_that_does_not_answer_the_first_time_is_measured_at_the_next_cycle(
    app, monkeypatch, caplog
):
    _postgres_only()
    from sqlalchemy.exc import OperationalError

    _host_off_by(monkeypatch, 60)
    measure = poller.clock_skew
    calls = []

    def down_once(now):  # noqa: ANN001, ANN202
        calls.append(now)
        if len(calls) == 1:
            raise OperationalError("SELECT clock_timestamp()", {}, Exception("server closed the connection"))
        return measure(now)

    monkeypatch.setattr(poller, "clock_skew", down_once)
    loop = Poller(60)
    with pytest.raises(OperationalError):
        loop.run_once()
    loop.run_once()
    loop.run_once()
    assert len(calls) == 2
    [warned] = [r.getMessage() for r in caplog.records if "this host's clock is" in r.getMessage()]
    figure, direction = _said(warned)
    assert direction == "ahead of" and abs(figure - 60) <= SPREAD
