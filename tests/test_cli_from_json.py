"""``aiimpl mappings create|update --from-json``: a file the API could only answer ``Invalid request
body`` for (too large a request, text no database can store) is refused with what is wrong with it."""
from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo

from aiimpl_core.cli import (
    cli,
    commands,  # noqa: F401 - registers the command groups
)
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker

LIMIT = 2 * 1024 * 1024  # the API's request size limit
SAID_LIMIT = "2,097,152 bytes (2 MiB)"


@pytest.fixture
def aiimpl_plugins():
    return [FakeTracker().plugin, FakeRunner("fly-machines", "fly").plugin]


@pytest.fixture
def run(app):
    def invoke(*args: str, input: str | None = None):  # noqa: A002
        return CliRunner().invoke(cli, list(args), obj=ScriptInfo(create_app=lambda: app), input=input)

    return invoke


def _mapping(**fields: Any) -> dict[str, Any]:
    return {"teamKey": "ENG", "owner": "acme", "repo": "api", "defaultBranch": "main", **fields}


def _nothing_saved(run: Any) -> None:
    r = run("mappings", "list", "--json")
    assert r.exit_code == 0, r.output
    assert "ENG" not in r.output


# -- the request size limit ----------------------------------------------------------------------------

def test_a_file_over_the_request_size_limit_is_refused_with_its_size_and_the_limit(run, tmp_path):
    source = tmp_path / "m.json"
    source.write_text(json.dumps(_mapping(extraEnv={"BIG": "x" * LIMIT})))
    size = source.stat().st_size
    said = f"Error: --from-json: {source} is {size:,} bytes, over the API's request size limit"
    r = run("mappings", "create", "ENG", "--from-json", str(source))
    assert (r.exit_code, r.output) == (1, f"{said} of {SAID_LIMIT}\n")
    _nothing_saved(run)
    r = run("mappings", "create", "ENG", "--owner", "acme", "--repo", "api", "--default-branch", "main")
    assert r.exit_code == 0, r.output
    r = run("mappings", "update", "ENG", "--from-json", str(source))
    assert (r.exit_code, r.output) == (1, f"{said} of {SAID_LIMIT}\n")
    shown = json.loads(run("mappings", "show", "ENG", "--json").output)
    assert shown.get("mapping", shown)["extraEnv"] == {}


def test_standard_input_over_the_request_size_limit_is_refused(run):
    r = run("mappings", "create", "ENG", "--from-json", "-", input=json.dumps(_mapping(big="x" * LIMIT)))
    assert (r.exit_code, r.output) == (
        1, f"Error: --from-json: standard input holds more than {SAID_LIMIT}, the API's request size limit\n")
    _nothing_saved(run)


def test_a_file_within_the_limit_whose_request_is_not_is_refused_with_the_requests_size(run, tmp_path):
    """Every character beyond ASCII is sent as a JSON escape, 6 bytes for the 2 of ``é`` in the file."""
    source = tmp_path / "m.json"
    source.write_text(json.dumps(_mapping(owner="é" * 400_000), ensure_ascii=False), encoding="utf-8")
    assert source.stat().st_size <= LIMIT
    sent = len(json.dumps(_mapping(owner="é" * 400_000), sort_keys=True))
    r = run("mappings", "create", "ENG", "--from-json", str(source))
    said = f"Error: the mapping is {sent:,} bytes as JSON, over the API's request size limit"
    assert (r.exit_code, r.output) == (1, f"{said} of {SAID_LIMIT}\n")
    _nothing_saved(run)


@pytest.mark.parametrize("over", [0, 1], ids=["at-the-limit", "one-byte-over"])
def test_the_limit_is_the_apis_to_the_byte(run, tmp_path, over):
    """A request of exactly the limit reaches the API, which reads it (and refuses the variable it
    holds as too long for a process); one byte more is refused before it is sent."""
    bare = json.dumps(_mapping(extraEnv={"BIG": ""}), sort_keys=True)
    source = tmp_path / "m.json"
    padded = _mapping(extraEnv={"BIG": "x" * (LIMIT - len(bare) + over)})
    source.write_text(json.dumps(padded, sort_keys=True))
    assert source.stat().st_size == LIMIT + over
    r = run("mappings", "create", "ENG", "--from-json", str(source))
    assert r.exit_code == 1
    if over:
        assert r.output.startswith(f"Error: --from-json: {source} is {LIMIT + 1:,} bytes, over"), r.output
    else:
        assert r.output.startswith("Error: extraEnv BIG is too long"), r.output
    _nothing_saved(run)


# -- text the database cannot store -------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "said"), [
    ({"owner": "ac\u0000me"}, "the field owner holds a NUL character"),
    ({"ticketing": {"provider": "fake-tracker", "settings": {"teams": ["ENG", "\u0000"]}}},
     "the field ticketing.settings.teams[1] holds a NUL character"),
    ({"extraEnv": {"A\u0000B": "x"}}, 'the name of the field extraEnv["A\\u0000B"] holds a NUL character'),
    ({"own\u0000er": "acme"}, 'the name of the field ["own\\u0000er"] holds a NUL character'),
], ids=["field", "nested", "variable-name", "field-name"])
def test_a_nul_character_in_the_file_is_refused_naming_its_field(run, tmp_path, fields, said):
    source = tmp_path / "m.json"
    source.write_text(json.dumps(_mapping(**fields)))
    r = run("mappings", "create", "ENG", "--from-json", str(source))
    assert (r.exit_code, r.output) == (
        1, f"Error: --from-json: {source}: {said} (\\u0000), which the database cannot store\n")
    assert "\x00" not in r.output
    _nothing_saved(run)


def test_a_nul_character_on_standard_input_and_in_an_update_is_refused(run):
    r = run("mappings", "create", "ENG", "--owner", "acme", "--repo", "api", "--default-branch", "main")
    assert r.exit_code == 0, r.output
    r = run("mappings", "update", "ENG", "--from-json", "-", input='{"repo": "w\\u0000eb"}')
    assert (r.exit_code, r.output) == (
        1, "Error: --from-json: standard input: the field repo holds a NUL character (\\u0000), which the "
           "database cannot store\n")
    shown = json.loads(run("mappings", "show", "ENG", "--json").output)
    assert shown.get("mapping", shown)["repo"] == "api"


def test_a_lone_surrogate_in_the_file_is_refused_naming_its_field(run, tmp_path):
    source = tmp_path / "m.json"
    source.write_text('{"owner": "acme", "repo": "api\\ud800"}')
    r = run("mappings", "create", "ENG", "--from-json", str(source))
    assert (r.exit_code, r.output) == (
        1, f"Error: --from-json: {source}: the field repo holds a lone surrogate (\\ud800-\\udfff), which is "
           f"not a Unicode character\n")
    _nothing_saved(run)


def test_nesting_deeper_than_the_api_reads_is_refused_naming_the_field(run, tmp_path):
    deep: list[Any] = []
    for _ in range(70):
        deep = [deep]
    source = tmp_path / "m.json"
    source.write_text(json.dumps(_mapping(ticketing={"provider": "fake-tracker", "settings": deep})))
    r = run("mappings", "create", "ENG", "--from-json", str(source))
    deepest = "ticketing.settings" + "[0]" * 62
    assert (r.exit_code, r.output) == (
        1, f"Error: --from-json: {source}: the field {deepest} nests deeper than the API reads (64 levels)\n")
    _nothing_saved(run)


def test_a_nul_character_in_the_ticketing_option_is_a_bad_parameter(run):
    r = run("mappings", "create", "ENG", "--owner", "acme", "--repo", "api",
            "--ticketing", '{"provider": "fake-\\u0000tracker"}')
    assert r.exit_code == 2, r.output
    assert ("Invalid value for --ticketing: the field ticketing.provider holds a NUL character (\\u0000), "
            "which the database cannot store") in r.output
    assert "Traceback" not in r.output
    _nothing_saved(run)
