"""``aiimpl mappings sync-workflows``: --all fits a deploy script on an install with several runners."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo

from aiimpl_core.cli import (
    cli,
    commands,  # noqa: F401 - registers the command groups
)
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker


@pytest.fixture
def gha() -> FakeRunner:
    return FakeRunner("github-actions", "gha", workflow_sync=True)


@pytest.fixture
def aiimpl_plugins(gha):
    return [FakeTracker().plugin, gha.plugin, FakeRunner("fly-machines", "fly").plugin]


@pytest.fixture
def run(app):
    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), obj=ScriptInfo(create_app=lambda: app))

    for team, mode in (("ENG", "github-actions"), ("FLY", "fly-machines"), ("OPS", "github-actions")):
        r = CliRunner().invoke(cli, ["mappings", "create", team, "--owner", "acme", "--repo", "api",
                                     "--default-branch", "main", "--execution-mode", mode],
                               obj=ScriptInfo(create_app=lambda: app))
        assert r.exit_code == 0, r.output
    return invoke


def test_all_syncs_what_uses_workflow_files_and_skips_the_rest(run, gha):
    r = run("mappings", "sync-workflows", "--all")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [
        "ENG: ok",
        "FLY: skipped (executionMode 'fly-machines' does not use workflow files)",
        "OPS: ok",
    ]
    assert gha.synced == ["ENG", "OPS"]
    assert r.stderr == ""  # (no terminal: no progress bar, nor its label alone)


def test_all_as_json(run):
    r = run("mappings", "sync-workflows", "--all", "--json")
    assert r.exit_code == 0, r.output
    body = json.loads(r.stdout)
    assert body["FLY"] == {"skipped": "executionMode 'fly-machines' does not use workflow files"}
    assert body["ENG"]["backend"] == "github-actions" and body["OPS"]["teamKey"] == "OPS"


def test_one_mapping_answers_as_the_api_does(run, gha):
    r = run("mappings", "sync-workflows", "ENG")
    assert (r.exit_code, r.stdout) == (0, "ENG: ok\n")
    r = run("mappings", "sync-workflows", "FLY")
    assert r.exit_code == 1
    assert r.output == "Error: executionMode 'fly-machines' does not use workflow files; nothing to sync\n"
    r = run("mappings", "sync-workflows", "NOPE")
    assert (r.exit_code, r.output) == (1, "Error: Team not found\n")
    assert gha.synced == ["ENG"]


@pytest.mark.parametrize(("args", "said"), [
    ((), "give a TEAM_KEY or --all"),
    (("ENG", "--all"), "give a TEAM_KEY or --all, not both"),
])
def test_a_team_key_or_all(run, args, said):
    r = run("mappings", "sync-workflows", *args)
    assert r.exit_code == 2 and r.output.splitlines()[-1] == f"Error: {said}"


def test_a_syncs_warnings_are_said_on_standard_error(run, gha):
    """The files were written, but their runs will fail (AIIMPL_PUBLIC_URL only this host reaches):
    the sync succeeds (exit 0), and says so beside its "ok"."""
    gha.sync_warnings = ("AIIMPL_PUBLIC_URL names 127.0.0.1, an address of this host only",)
    r = run("mappings", "sync-workflows", "ENG")
    assert (r.exit_code, r.stdout) == (0, "ENG: ok\n")
    assert r.stderr == "Warning: ENG: AIIMPL_PUBLIC_URL names 127.0.0.1, an address of this host only\n"
    r = run("mappings", "sync-workflows", "--all")
    assert r.exit_code == 0, r.output
    assert [line for line in r.stderr.splitlines() if line.startswith("Warning")] == [
        "Warning: ENG: AIIMPL_PUBLIC_URL names 127.0.0.1, an address of this host only",
        "Warning: OPS: AIIMPL_PUBLIC_URL names 127.0.0.1, an address of this host only",
    ]
    r = run("mappings", "sync-workflows", "ENG", "--json")
    assert json.loads(r.stdout)["ENG"]["warnings"] == list(gha.sync_warnings)
    gha.sync_warnings = ()
    r = run("mappings", "sync-workflows", "ENG")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "ENG: ok\n", "")
