"""The shipped workflow templates: valid workflows whose inputs are exactly what the backend sends."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from aiimpl_core.session import env as session_env
from aiimpl_core.testing.contract import make_context, sample_dispatch_request

from aiimpl_gha import config
from aiimpl_gha.backend import GitHubActionsBackend
from aiimpl_gha.workflows import template_text

TEMPLATES = ["ai-implement.yml", "ai-implement-planning.yml", "ai-implement-gap-fill.yml"]


def load(name: str) -> dict:
    doc = yaml.safe_load(template_text(name))
    assert isinstance(doc, dict)
    return doc


def triggers(doc: dict) -> dict:
    # YAML 1.1 reads the bare key ``on`` as true
    return doc.get("on", doc.get(True))


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_is_a_dispatchable_workflow(name: str) -> None:
    doc = load(name)
    assert doc["name"] and doc["jobs"]
    assert set(triggers(doc)) == {"workflow_dispatch"}
    assert doc["run-name"] == "${{ inputs.run_name }}"
    for job in doc["jobs"].values():
        assert job["runs-on"] and job["steps"] and job["timeout-minutes"] > 0


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_inputs_match_what_the_backend_sends(name: str) -> None:
    declared = triggers(load(name))["workflow_dispatch"]["inputs"]
    sent = GitHubActionsBackend(make_context({})).workflow_inputs(sample_dispatch_request())
    assert list(declared) == list(config.WORKFLOW_INPUTS)
    assert set(sent) == set(declared)
    for key, spec in declared.items():
        assert spec["type"] == "string" and spec["description"]
        assert spec.get("required") is (key != "env")


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_masks_credentials_first_and_runs_the_session(name: str) -> None:
    steps = next(iter(load(name)["jobs"].values()))["steps"]
    first = steps[0]
    assert "env" not in first, "credentials must not reach a step's env before they are masked"
    for credential in config.CREDENTIAL_INPUTS:
        assert credential in first["run"]
    assert "::add-mask::" in first["run"]
    run_step = steps[-1]
    assert run_step["run"].strip() == "aiimpl session run"
    assert any("pip install" in s.get("run", "") and "aiimpl-core" in s.get("run", "") for s in steps)
    env = run_step["env"]
    known = {v.name for v in (*session_env.ALL, *session_env.OPTIONAL)}
    for input_name, var in {**config.IDENTITY_INPUTS, **config.CREDENTIAL_INPUTS}.items():
        assert var in known
        assert env[var] == f"${{{{ inputs.{input_name} }}}}"
    # values come from inputs, the repository's Actions secrets, or GitHub's own run context
    for var, value in env.items():
        contexts = re.findall(r"\$\{\{ (\w+)\.\w+ \}\}", value)
        assert contexts and set(contexts) <= {"inputs", "secrets", "github"}, var
        assert var in known or "secrets" in contexts, var
    assert "npm install --global @anthropic-ai/claude-code" in "\n".join(s.get("run", "") for s in steps)


def _bash_steps(name: str) -> list[dict]:
    steps = next(iter(load(name)["jobs"].values()))["steps"]
    return [s for s in steps if "run" in s]


@pytest.mark.skipif(not (shutil.which("bash") and shutil.which("jq")), reason="needs bash and jq")
@pytest.mark.parametrize("name", TEMPLATES)
def test_template_preparation_steps_mask_and_export(name: str, tmp_path: Path) -> None:
    """Run the first two steps as a runner would: credentials masked, ``env`` exported."""
    request = sample_dispatch_request(
        env={
            "AIIMPL_NONCE": "n-1",
            "AIIMPL_RESULT_TOKEN": "r-2",
            "AIIMPL_PROGRESS_TOKEN": "p-3",
            "AIIMPL_CONTEXT_TOKEN": "c-4",
            "AIIMPL_BRANCH": "ai/ENG-1",
            "MULTI": "line one\nline two",
        },
        secret_names=frozenset(
            {"AIIMPL_NONCE", "AIIMPL_RESULT_TOKEN", "AIIMPL_PROGRESS_TOKEN", "AIIMPL_CONTEXT_TOKEN"}
        ),
    )
    inputs = GitHubActionsBackend(make_context({})).workflow_inputs(request)
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"inputs": inputs}))
    github_env = tmp_path / "github_env"
    github_env.write_text("")
    env = {**os.environ, "GITHUB_EVENT_PATH": str(event), "GITHUB_ENV": str(github_env)}
    mask, export = _bash_steps(name)[:2]

    out = subprocess.run(
        ["bash", "-e", "-c", mask["run"]], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["::add-mask::n-1", "::add-mask::r-2", "::add-mask::p-3", "::add-mask::c-4"]

    subprocess.run(["bash", "-e", "-c", export["run"]], env=env, capture_output=True, text=True, check=True)
    text = github_env.read_text()
    assert "AIIMPL_BRANCH<<" in text and "\nai/ENG-1\n" in text
    assert "\nline one\nline two\n" in text
    assert "n-1" not in text  # credentials are not exported through the env input


def test_an_install_setting_is_read_in_time_linear_in_it() -> None:
    """A long word (a setting may hold 128 KiB): each of its letters was tried as a URL's scheme
    against the rest of it, quadratic (5.5 s at 64 KB); a URL after a long prefix is still seen."""
    import time

    from aiimpl_core.errors import ProviderConfigError

    from aiimpl_gha.workflows import install_words

    started = time.process_time()
    assert install_words("AIIMPL_GHA_SESSION_PACKAGE", "a" * 120_000) == ("a" * 120_000,)
    assert time.process_time() - started < 2
    with pytest.raises(ProviderConfigError, match="must not carry credentials"):
        install_words("AIIMPL_GHA_SESSION_PACKAGE", "x" * 100 + "git+https://u:pw@git.example/p.git")
