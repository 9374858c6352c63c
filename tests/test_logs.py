"""Logging: an operator's INFO log is not opened by lines that tell them nothing."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from aiimpl_core import logs


@pytest.fixture
def quiet_loggers():
    saved = {name: logging.getLogger(name).level for name in logs.QUIET_AT_INFO}
    root = logging.getLogger().level
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger().setLevel(root)


def test_the_cli_at_info_does_not_list_alembics_plugins():
    env = dict(os.environ, AIIMPL_LOG_LEVEL="INFO")
    done = subprocess.run([sys.executable, "-m", "aiimpl_core.cli", "session", "run", "--help"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout
    assert "alembic.runtime.plugins" not in done.stderr


@pytest.mark.usefixtures("quiet_loggers")
@pytest.mark.parametrize(("level", "quiet"), [("INFO", logging.WARNING), ("warning", logging.WARNING),
                                               ("DEBUG", logging.NOTSET)])
def test_configure_holds_the_quiet_loggers_to_warnings_unless_debugging(level, quiet):
    logging.getLogger().setLevel(level.upper())  # basicConfig leaves a configured root alone
    logs.configure(level)
    for name in logs.QUIET_AT_INFO:
        assert logging.getLogger(name).level == quiet
