"""``aiimpl mappings`` on an install with a runner backend that only a runner mode selects (local
Docker: a mapping does not name it)."""
from __future__ import annotations

import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo

from aiimpl_core.cli import (
    cli,
    commands,  # noqa: F401 - registers the command groups
)
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker


@pytest.fixture
def aiimpl_plugins():
    local = FakeRunner("local-docker", "local", mapping_selectable=False)
    return [FakeTracker().plugin, local.plugin, FakeRunner("github-actions", "gha").plugin]


def _run(app, *args: str):  # noqa: ANN001, ANN202
    return CliRunner().invoke(cli, list(args), obj=ScriptInfo(create_app=lambda: app))


@pytest.mark.parametrize("command", ["create", "update"])
def test_a_mapping_naming_it_is_refused_with_how_to_use_it(app, command):
    """Refused with the reference's message, which names the other backends only: how to use the
    one given is said after it."""
    if command == "update":
        assert _run(app, "mappings", "create", "ENG", "--owner", "acme", "--repo", "api",
                    "--default-branch", "main").exit_code == 0
    r = _run(app, "mappings", command, "ENG", "--owner", "acme", "--repo", "api", "--default-branch", "main",
             "--execution-mode", "local-docker")
    assert r.exit_code == 1, r.output
    assert r.output == ("Error: executionMode must be 'github-actions' (local-docker is not named by a "
                        "mapping: it runs every mapping's sessions while the runner mode is local: aiimpl "
                        "runner-mode set local)\n")
    # another value is refused with the message alone
    r = _run(app, "mappings", command, "ENG", "--owner", "acme", "--repo", "api", "--default-branch", "main",
             "--execution-mode", "kubernetes")
    assert (r.exit_code, r.output) == (1, "Error: executionMode must be 'github-actions'\n")
