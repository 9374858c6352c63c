"""``check`` of the github-actions backend: are the workflows it dispatches installed, current and
enabled?

Read-only against the fake GitHub: per repository and workflow file one contents read and, for a
current file, one read of the workflow (its ``state``), no write. Reading a workflow is outside the
fast subset of GitHub's description, so these tests validate against the complete one.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from aiimpl_core import session_package
from aiimpl_core.services.checks import FAILED, OK, run_checks
from aiimpl_core.testing.contract import make_context, sample_mapping
from aiimpl_core.testing.fake_github import FakeGitHub
from aiimpl_core.testing.fakes import add_mapping
from aiimpl_core.types import CheckResult

from aiimpl_gha import workflows
from aiimpl_gha.backend import GitHubActionsBackend
from aiimpl_gha.workflows import template_text

from .conftest import CORE_REQUIREMENT, PUBLIC_URL, github_config

FIX = "run aiimpl mappings sync-workflows ENG"

pytestmark = pytest.mark.parametrize("gh", ["full"], indirect=True)


def contents_reads(gh: FakeGitHub) -> list[str]:
    return [r.path for r in gh.requests if r.method == "GET" and "/contents/" in r.path]


def workflow_reads(gh: FakeGitHub) -> list[str]:
    return [
        r.path
        for r in gh.requests
        if r.method == "GET" and re.fullmatch(r"/repos/[^/]+/[^/]+/actions/workflows/[^/]+", r.path)
    ]


def writes(gh: FakeGitHub) -> list[str]:
    # minting an installation token is the only POST a read-only check may send
    return [
        f"{r.method} {r.path}"
        for r in gh.requests
        if r.method != "GET" and not r.path.endswith("/access_tokens")
    ]


def no_secret(gh: FakeGitHub, results: list[CheckResult]) -> None:
    secrets = [gh.personal_token, gh.private_key_pem, *(t.token for t in gh.issued_tokens)]
    for result in results:
        assert not any(s and s in result.detail for s in secrets), result


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


def test_check_installed_workflows_are_ok(gh: FakeGitHub, backend: GitHubActionsBackend) -> None:
    backend.sync_workflows(sample_mapping())
    gh.server.reset()
    results = list(backend.check([sample_mapping()]))
    assert results == [
        CheckResult(
            "workflow acme/api",
            True,
            ".github/workflows/ai-implement.yml on main is installed, current and enabled",
        ),
        CheckResult(
            "gap-fill workflow acme/api",
            True,
            ".github/workflows/ai-implement-gap-fill.yml on main is installed, current and enabled",
        ),
    ]
    assert contents_reads(gh) == [
        "/repos/acme/api/contents/.github/workflows/ai-implement.yml",
        "/repos/acme/api/contents/.github/workflows/ai-implement-gap-fill.yml",
    ]
    assert workflow_reads(gh) == [
        "/repos/acme/api/actions/workflows/ai-implement.yml",
        "/repos/acme/api/actions/workflows/ai-implement-gap-fill.yml",
    ]
    assert writes(gh) == []
    no_secret(gh, results)


def test_check_planning_workflow_only_when_the_mapping_plans(
    gh: FakeGitHub, backend: GitHubActionsBackend
) -> None:
    planning = sample_mapping(planning_enabled=True)
    backend.sync_workflows(planning)
    results = by_name(list(backend.check([planning])))
    assert results["planning workflow acme/api"] == CheckResult(
        "planning workflow acme/api",
        True,
        ".github/workflows/ai-implement-planning.yml on main is installed, current and enabled",
    )
    assert "planning workflow acme/api" not in by_name(list(backend.check([sample_mapping()])))


def test_check_missing_workflows_name_the_sync_command(gh: FakeGitHub, backend: GitHubActionsBackend) -> None:
    mapping = sample_mapping(planning_workflow_file="plan.yml")
    results = list(backend.check([mapping]))
    assert [(r.name, r.ok, r.detail) for r in results] == [
        ("workflow acme/api", False, f".github/workflows/ai-implement.yml on main is missing: {FIX}"),
        (
            "gap-fill workflow acme/api",
            False,
            f".github/workflows/ai-implement-gap-fill.yml on main is missing: {FIX}",
        ),
        ("planning workflow acme/api", False, f".github/workflows/plan.yml on main is missing: {FIX}"),
    ]
    assert writes(gh) == [] and gh.commits("acme", "api") == []
    assert workflow_reads(gh) == []  # only a current file's state is worth reading
    no_secret(gh, results)


def test_check_edited_workflow_is_out_of_date(gh: FakeGitHub, backend: GitHubActionsBackend) -> None:
    backend.sync_workflows(sample_mapping())
    gh.put_file("acme", "api", ".github/workflows/ai-implement.yml", "name: edited by hand\n")
    results = by_name(list(backend.check([sample_mapping()])))
    assert results["workflow acme/api"] == CheckResult(
        "workflow acme/api", False, f".github/workflows/ai-implement.yml on main is out of date: {FIX}"
    )
    assert results["gap-fill workflow acme/api"].ok


def test_check_reads_the_default_branch(gh: FakeGitHub, backend: GitHubActionsBackend) -> None:
    gh.add_branch("acme", "api", "develop")
    mapping = sample_mapping(default_branch="develop")
    backend.sync_workflows(sample_mapping())  # installed on main only
    results = list(backend.check([mapping]))
    assert [r.detail for r in results][0] == (
        f".github/workflows/ai-implement.yml on develop is missing: {FIX}"
    )
    backend.sync_workflows(mapping)
    assert all(r.ok for r in backend.check([mapping]))


def test_check_custom_workflow_file_name(gh: FakeGitHub, gh_config_backend: Any) -> None:
    backend = gh_config_backend({"AIIMPL_GHA_WORKFLOW_FILE": "sessions.yml"})
    backend.sync_workflows(sample_mapping())
    results = list(backend.check([sample_mapping()]))
    assert results[0] == CheckResult(
        "workflow acme/api", True, ".github/workflows/sessions.yml on main is installed, current and enabled"
    )


@pytest.fixture
def gh_config_backend(gh: FakeGitHub) -> Any:
    def make(extra: dict[str, Any]) -> GitHubActionsBackend:
        return GitHubActionsBackend(make_context({**github_config(gh), **extra}))

    return make


def test_check_one_read_per_repository_and_file(gh: FakeGitHub, backend: GitHubActionsBackend) -> None:
    gh.add_repo("acme", "web")
    mappings = [
        sample_mapping(team_key="ENG"),
        sample_mapping(team_key="OPS"),  # shares acme/api: read once
        sample_mapping(team_key="WEB", repo="web"),
    ]
    for mapping in mappings:
        backend.sync_workflows(mapping)
    gh.server.reset()
    results = list(backend.check(mappings))
    assert [r.name for r in results] == [
        "workflow acme/api",
        "gap-fill workflow acme/api",
        "workflow acme/web",
        "gap-fill workflow acme/web",
    ]
    assert all(r.ok for r in results)
    reads = contents_reads(gh)
    assert len(reads) == 4 and len(set(reads)) == 4
    states = workflow_reads(gh)
    assert len(states) == 4 and len(set(states)) == 4
    assert writes(gh) == []


def test_check_shared_repository_names_one_team(gh: FakeGitHub, backend: GitHubActionsBackend) -> None:
    results = list(backend.check([sample_mapping(team_key="OPS"), sample_mapping(team_key="ENG")]))
    assert results[0].detail.endswith(FIX)  # either team's sync installs it


def test_check_refused_read_reports_github_message_once_per_repository(
    gh: FakeGitHub, backend: GitHubActionsBackend
) -> None:
    gh.fail_next("GET", r"/contents/", 403, "Resource not accessible by integration")
    results = list(backend.check([sample_mapping()]))
    assert [(r.ok, r.detail) for r in results] == [
        (
            False,
            "could not read .github/workflows/ai-implement.yml on main: "
            "Resource not accessible by integration",
        ),
        (
            False,
            "could not read .github/workflows/ai-implement-gap-fill.yml on main: not asked, as reading "
            ".github/workflows/ai-implement.yml failed: Resource not accessible by integration",
        ),
    ]
    assert len(contents_reads(gh)) == 1  # the repository is not asked again
    assert workflow_reads(gh) == []
    no_secret(gh, results)


def test_check_app_not_installed_on_the_repository(gh: FakeGitHub, backend: GitHubActionsBackend) -> None:
    gh.add_repo("other", "svc")
    results = list(backend.check([sample_mapping(owner="other", repo="svc")]))
    assert [r.name for r in results] == ["workflow other/svc", "gap-fill workflow other/svc"]
    assert not any(r.ok for r in results)
    assert all(r.detail.startswith("could not read .github/workflows/") for r in results)
    assert contents_reads(gh) == []
    no_secret(gh, results)


def test_check_with_a_personal_token(gh: FakeGitHub) -> None:
    backend = GitHubActionsBackend(
        make_context({"AIIMPL_PUBLIC_URL": PUBLIC_URL, "AIIMPL_GITHUB_API_URL": gh.url,
                      "AIIMPL_GITHUB_TOKEN": gh.personal_token})
    )
    backend.sync_workflows(sample_mapping())
    results = list(backend.check([sample_mapping()]))
    assert all(r.ok for r in results)
    no_secret(gh, results)


def test_a_repository_a_token_does_not_see_is_not_said_to_lack_only_its_files(gh: FakeGitHub) -> None:
    """GitHub answers a file read in a repository that is not there (or that the token cannot see)
    as it answers a missing file: the check tells them apart (a listing of the repository's runs,
    asked only then) rather than advise a sync that cannot write, and a sync names the repository
    and branch it could not write to rather than GitHub's bare "Not Found"."""
    from aiimpl_core.errors import ProviderError

    backend = GitHubActionsBackend(
        make_context({"AIIMPL_PUBLIC_URL": PUBLIC_URL, "AIIMPL_GITHUB_API_URL": gh.url,
                      "AIIMPL_GITHUB_TOKEN": gh.personal_token})
    )
    mapping = sample_mapping(repo="nosuchrepo")
    results = by_name(list(backend.check([mapping])))
    assert results["workflow acme/nosuchrepo"] == CheckResult("workflow acme/nosuchrepo", False, (
        "could not read .github/workflows/ai-implement.yml on main: GitHub knows no repository "
        "acme/nosuchrepo these credentials can see, or its Actions are turned off (is the mapping's "
        "owner/repo right?)"))
    assert results["gap-fill workflow acme/nosuchrepo"].detail.startswith("could not read ")
    assert len([r for r in gh.requests if r.path.endswith("/actions/runs")]) == 1  # once per repository
    with pytest.raises(ProviderError) as synced:
        backend.sync_workflows(mapping)
    assert synced.value.message == (
        "Not Found: GitHub answered 404 writing .github/workflows/ai-implement.yml to main of "
        "acme/nosuchrepo (no such repository or branch, or these credentials cannot see it or write to it: a "
        "workflow file needs a personal token's `workflow` scope, or an App's Workflows: write permission)")


def test_check_without_mappings_asks_nothing(gh: FakeGitHub, backend: GitHubActionsBackend) -> None:
    assert list(backend.check([])) == []
    assert gh.requests == []


@pytest.mark.parametrize(
    ("state", "what"),
    [
        ("disabled_manually", "disabled by hand"),
        ("disabled_inactivity", "disabled for inactivity"),
        ("disabled_fork", "disabled (a fork's workflows start disabled)"),
    ],
)
def test_check_disabled_workflow_fails_with_how_to_enable_it(
    gh: FakeGitHub, backend: GitHubActionsBackend, state: str, what: str
) -> None:
    backend.sync_workflows(sample_mapping())
    gh.set_workflow_state("acme", "api", "ai-implement.yml", state)
    gh.server.reset()
    results = by_name(list(backend.check([sample_mapping()])))
    assert results["workflow acme/api"] == CheckResult(
        "workflow acme/api",
        False,
        f".github/workflows/ai-implement.yml on main is installed and current but {what} on GitHub, "
        "so every dispatch fails: enable it in the Actions tab of acme/api, "
        "or run gh workflow enable ai-implement.yml --repo acme/api",
    )
    assert results["gap-fill workflow acme/api"].ok
    assert writes(gh) == []  # reported, never enabled by the check
    no_secret(gh, list(results.values()))


def test_check_enabled_again_is_ok(gh: FakeGitHub, backend: GitHubActionsBackend) -> None:
    backend.sync_workflows(sample_mapping())
    gh.set_workflow_state("acme", "api", "ai-implement-gap-fill.yml", "disabled_manually")
    assert not by_name(list(backend.check([sample_mapping()])))["gap-fill workflow acme/api"].ok
    gh.set_workflow_state("acme", "api", "ai-implement-gap-fill.yml", "active")
    assert all(r.ok for r in backend.check([sample_mapping()]))


def test_check_workflow_not_registered_yet_is_not_a_failure(
    gh: FakeGitHub, backend: GitHubActionsBackend
) -> None:
    # GitHub registers a pushed workflow file a moment later: until then reading it answers 404
    backend.sync_workflows(sample_mapping())
    gh.fail_next("GET", r"/actions/workflows/ai-implement\.yml$", 404, "Not Found")
    results = by_name(list(backend.check([sample_mapping()])))
    assert results["workflow acme/api"] == CheckResult(
        "workflow acme/api",
        True,
        ".github/workflows/ai-implement.yml on main is installed and current; GitHub has not "
        "registered it as a workflow yet, so whether it is enabled is not known",
    )
    assert results["gap-fill workflow acme/api"].detail.endswith("is installed, current and enabled")


def test_check_refused_workflow_read_reports_githubs_message_once_per_repository(
    gh: FakeGitHub, backend: GitHubActionsBackend
) -> None:
    gh.add_repo("acme", "web")
    mappings = [sample_mapping(), sample_mapping(team_key="WEB", repo="web")]
    for mapping in mappings:
        backend.sync_workflows(mapping)
    gh.server.reset()
    gh.fail_next("GET", r"^/repos/acme/api/actions/workflows/", 403, "Resource not accessible by integration")
    results = list(backend.check(mappings))
    assert [(r.name, r.ok, r.detail) for r in results] == [
        (
            "workflow acme/api",
            False,
            "could not read the state of ai-implement.yml on GitHub: Resource not accessible by integration",
        ),
        (
            "gap-fill workflow acme/api",
            False,
            "could not read .github/workflows/ai-implement-gap-fill.yml on main: not asked, as reading "
            "the state of ai-implement.yml on GitHub failed: Resource not accessible by integration",
        ),
        (
            "workflow acme/web",
            True,
            ".github/workflows/ai-implement.yml on main is installed, current and enabled",
        ),
        (
            "gap-fill workflow acme/web",
            True,
            ".github/workflows/ai-implement-gap-fill.yml on main is installed, current and enabled",
        ),
    ]
    # the repository whose read failed is not asked again; the other one is read as usual
    assert [p for p in contents_reads(gh) if "/acme/api/" in p] == [
        "/repos/acme/api/contents/.github/workflows/ai-implement.yml"
    ]
    assert [p for p in workflow_reads(gh) if "/acme/api/" in p] == [
        "/repos/acme/api/actions/workflows/ai-implement.yml"
    ]
    assert len(workflow_reads(gh)) == 3
    no_secret(gh, results)


# -- through ``aiimpl check`` --------------------------------------------------------------------


@pytest.fixture
def aiimpl_config(gh: FakeGitHub) -> dict[str, Any]:
    return github_config(gh)


def test_check_rows_in_the_report(app: Any, gh: FakeGitHub) -> None:
    row = add_mapping(repo="api")
    rows = [r for r in run_checks() if r.provider == "github-actions"]
    assert [(r.name, r.status) for r in rows] == [
        ("workflow acme/api", FAILED),
        ("gap-fill workflow acme/api", FAILED),
    ]
    app.extensions["aiimpl"].runner("github-actions").sync_workflows(row.view())
    rows = [r for r in run_checks() if r.provider == "github-actions"]
    assert [(r.name, r.status) for r in rows] == [
        ("workflow acme/api", OK),
        ("gap-fill workflow acme/api", OK),
    ]
    gh.set_workflow_state("acme", "api", "ai-implement.yml", "disabled_inactivity")
    rows = [r for r in run_checks() if r.provider == "github-actions"]
    assert [(r.name, r.status) for r in rows] == [
        ("workflow acme/api", FAILED),
        ("gap-fill workflow acme/api", OK),
    ]
    assert "gh workflow enable ai-implement.yml --repo acme/api" in rows[0].detail


# -- what the installed workflows install --------------------------------------------------------


def _package(version: str, content: bytes) -> session_package.SessionPackage:
    return session_package.SessionPackage(
        f"aiimpl_core-{version}-py3-none-any.whl", content, hashlib.sha256(content).hexdigest()
    )


def _wheel(version: str, content: bytes) -> str:
    sha = hashlib.sha256(content).hexdigest()
    return (f"aiimpl-core @ http://orchestrator.test/runner/session-package/{sha}/"
            f"aiimpl_core-{version}-py3-none-any.whl#sha256={sha}")


@pytest.mark.parametrize(("before", "after"), [
    (("0.1.0", b"wheel"), ("0.2.0", b"wheel")),
    (("0.1.0", b"before"), ("0.1.0", b"after")),
], ids=["upgraded", "same-version-other-files"])
def test_check_names_the_session_program_an_older_sync_installed(
    app: Any, gh: FakeGitHub, backend: GitHubActionsBackend, monkeypatch: pytest.MonkeyPatch,
    before: tuple[str, bytes], after: tuple[str, bytes],
) -> None:
    """An upgraded orchestrator (or one whose files changed under the same version) runs another
    wheel than the installed workflows pin: reported out of date, a sync rewrites them. The wheel
    they pin is still served (the sync kept it), so nothing more is said."""
    monkeypatch.setattr(workflows, "core_package", lambda: _package(*before))
    backend.sync_workflows(sample_mapping())
    gh.server.reset()
    monkeypatch.setattr(workflows, "core_package", lambda: _package(*after))
    results = list(backend.check([sample_mapping()]))
    assert [(r.ok, r.detail) for r in results] == [
        (False, f".github/workflows/ai-implement.yml on main is out of date (it installs {_wheel(*before)}, "
                f"not {_wheel(*after)}): {FIX}"),
        (False, f".github/workflows/ai-implement-gap-fill.yml on main is out of date (it installs "
                f"{_wheel(*before)}, not {_wheel(*after)}): {FIX}"),
    ]
    assert writes(gh) == []
    assert backend.sync_workflows(sample_mapping()).updated == (
        ".github/workflows/ai-implement.yml", ".github/workflows/ai-implement-gap-fill.yml"
    )
    assert all(r.ok for r in backend.check([sample_mapping()]))


def test_check_names_the_unpinned_session_program_of_an_earlier_template(
    gh: FakeGitHub, backend: GitHubActionsBackend
) -> None:
    # what sync-workflows wrote before it pinned the session program: the newest release, whatever it is
    backend.sync_workflows(sample_mapping())
    gh.put_file("acme", "api", ".github/workflows/ai-implement.yml", template_text("ai-implement.yml"))
    results = by_name(list(backend.check([sample_mapping()])))
    assert results["workflow acme/api"].detail == (
        ".github/workflows/ai-implement.yml on main is out of date (it installs aiimpl-core, "
        f"not {CORE_REQUIREMENT}): {FIX}"
    )
    assert results["gap-fill workflow acme/api"].ok


def test_check_names_the_agent_an_installed_workflow_installs(gh: FakeGitHub, gh_config_backend: Any) -> None:
    gh_config_backend({}).sync_workflows(sample_mapping())
    backend = gh_config_backend({"AIIMPL_GHA_AGENT_PACKAGE": "none"})
    assert by_name(list(backend.check([sample_mapping()])))["workflow acme/api"].detail == (
        ".github/workflows/ai-implement.yml on main is out of date (its agent is @anthropic-ai/claude-code, "
        f"not none): {FIX}"
    )
    backend.sync_workflows(sample_mapping())
    pinned = gh_config_backend({"AIIMPL_GHA_AGENT_PACKAGE": "@anthropic-ai/claude-code@1.0.3",
                                "AIIMPL_GHA_SESSION_PACKAGE": "aiimpl-core[postgres]>=0.1"})
    assert by_name(list(pinned.check([sample_mapping()])))["workflow acme/api"].detail == (
        ".github/workflows/ai-implement.yml on main is out of date (it installs "
        f"{CORE_REQUIREMENT}, not aiimpl-core[postgres]>=0.1; its agent is none, not "
        f"@anthropic-ai/claude-code@1.0.3): {FIX}"
    )
    pinned.sync_workflows(sample_mapping())
    assert all(r.ok for r in pinned.check([sample_mapping()]))


@pytest.mark.parametrize(("settings", "said"), [
    ({"AIIMPL_GHA_SESSION_PACKAGE": "aiimpl-core; id"},
     "AIIMPL_GHA_SESSION_PACKAGE must be one line of package specs"),
    ({"AIIMPL_GHA_AGENT_PACKAGE": "https://u:pw@npm.acme.example/agent.tgz"},
     "AIIMPL_GHA_AGENT_PACKAGE must not carry credentials in a URL"),
    ({"AIIMPL_PUBLIC_URL": ""}, "AIIMPL_PUBLIC_URL is not set: the workflows install the session program"),
    ({"AIIMPL_PUBLIC_URL": "https://u:pw@orchestrator.acme.example"},
     "AIIMPL_PUBLIC_URL must not carry credentials when the workflows install the session program"),
], ids=["session", "agent", "no-public-url", "public-url-credentials"])
def test_check_settings_the_workflows_cannot_install_fail_one_line_and_read_nothing(
    gh: FakeGitHub, gh_config_backend: Any, settings: dict[str, str], said: str,
) -> None:
    results = list(gh_config_backend(settings).check([sample_mapping()]))
    assert [(r.name, r.ok) for r in results] == [("session program", False)]
    assert results[0].detail.startswith(said)
    assert "pw@" not in results[0].detail
    assert gh.requests == []


def test_check_session_program_row_in_the_report(app: Any, gh: FakeGitHub) -> None:
    add_mapping(repo="api")
    app.config["AIIMPL_GHA_SESSION_PACKAGE"] = "aiimpl-core`id`"
    rows = [r for r in run_checks() if r.provider == "github-actions"]
    assert [(r.name, r.status) for r in rows] == [("session program", FAILED)]
    assert rows[0].detail.startswith("AIIMPL_GHA_SESSION_PACKAGE must be one line of package specs")


# -- the wheels the installed workflows pin --------------------------------------------------------


def _legacy_wheel(version: str, content: bytes) -> str:
    """A wheel requirement set by hand with the URL without a hash in the path."""
    return (f"aiimpl-core @ http://orchestrator.test/runner/session-package/aiimpl_core-{version}-py3-none-any"
            f".whl#sha256={hashlib.sha256(content).hexdigest()}")


def _pinned_in(gh: FakeGitHub, requirement: str) -> None:
    """Each installed workflow as a sync wrote it, installing ``requirement``."""
    for path in (".github/workflows/ai-implement.yml", ".github/workflows/ai-implement-gap-fill.yml"):
        text = gh.file("acme", "api", path)
        line = next(x for x in text.splitlines() if "pip install --upgrade" in x)
        wanted = line.split("--upgrade ")[0] + f"--upgrade '{requirement}'"
        gh.put_file("acme", "api", path, text.replace(line, wanted))


def _lost(path: str, wheel: str, version: str) -> str:
    return (f".github/workflows/{path} on main is out of date (it installs {wheel}, not "
            f"{CORE_REQUIREMENT}) and pins a wheel this orchestrator no longer serves "
            f"(aiimpl_core-{version}-py3-none-any.whl): its sessions will fail at install until a sync; "
            f"{FIX}")


def test_check_says_a_workflow_pinning_a_wheel_no_longer_kept_fails_at_install(
    app: Any, gh: FakeGitHub, backend: GitHubActionsBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wheel the orchestrator neither runs nor keeps (the housekeeping removed it) answers 404:
    the sessions of the workflows pinning it fail at their install step until a sync."""
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import StoredSessionPackage

    monkeypatch.setattr(workflows, "core_package", lambda: _package("0.0.9", b"old"))
    backend.sync_workflows(sample_mapping())
    monkeypatch.undo()
    kept = list(backend.check([sample_mapping()]))
    assert [r.detail.split(" (it installs")[0] for r in kept] == [
        ".github/workflows/ai-implement.yml on main is out of date",
        ".github/workflows/ai-implement-gap-fill.yml on main is out of date",
    ]
    assert not any("no longer serves" in r.detail for r in kept)
    db.session.execute(db.delete(StoredSessionPackage))
    db.session.commit()
    results = list(backend.check([sample_mapping()]))
    assert [(r.ok, r.detail) for r in results] == [
        (False, _lost("ai-implement.yml", _wheel("0.0.9", b"old"), "0.0.9")),
        (False, _lost("ai-implement-gap-fill.yml", _wheel("0.0.9", b"old"), "0.0.9")),
    ]
    backend.sync_workflows(sample_mapping())
    assert all(r.ok for r in backend.check([sample_mapping()]))


def test_check_a_workflow_synced_before_wheels_were_kept(
    gh: FakeGitHub, backend: GitHubActionsBackend
) -> None:
    """Its URL has no hash: it is served the running wheel only, which it pins only until a deploy
    changes the core's files."""
    backend.sync_workflows(sample_mapping())
    running = session_package.current()
    version = running.filename.split("-")[1]
    served = _legacy_wheel(version, running.data)
    _pinned_in(gh, served)
    assert [r.detail for r in backend.check([sample_mapping()])] == [
        f".github/workflows/ai-implement.yml on main is out of date (it installs {served}, not "
        f"{CORE_REQUIREMENT}): {FIX}",
        f".github/workflows/ai-implement-gap-fill.yml on main is out of date (it installs {served}, not "
        f"{CORE_REQUIREMENT}): {FIX}",
    ]
    gone = _legacy_wheel(version, b"the files before the deploy")
    _pinned_in(gh, gone)
    assert [r.detail for r in backend.check([sample_mapping()])] == [
        _lost("ai-implement.yml", gone, version),
        _lost("ai-implement-gap-fill.yml", gone, version),
    ]


def test_check_keeps_the_wheel_a_current_workflow_pins(
    app: Any, gh: FakeGitHub, backend: GitHubActionsBackend
) -> None:
    """A check that finds the workflows current pins their wheel again, as a sync does: the
    housekeeping keeps what installed workflows still use."""
    from datetime import timedelta

    from aiimpl_core.extensions import db
    from aiimpl_core.orm import StoredSessionPackage, utcnow

    backend.sync_workflows(sample_mapping())
    row = db.session.get(StoredSessionPackage, session_package.current().sha256)
    assert row is not None and row.filename == session_package.current().filename
    long_ago = utcnow() - timedelta(days=200)
    row.last_pinned_at = long_ago
    db.session.commit()
    gh.fail_next("GET", r"/contents/\.github/workflows/ai-implement\.yml$", 404, "Not Found")
    assert not any(r.ok for r in backend.check([sample_mapping()])[:1])
    db.session.expire_all()
    # a missing file and a current one: the current one pins it
    assert db.session.get(StoredSessionPackage, row.sha256).last_pinned_at > long_ago
    row.last_pinned_at = long_ago
    db.session.commit()
    gh.put_file("acme", "api", ".github/workflows/ai-implement.yml", "name: edited\n")
    gh.put_file("acme", "api", ".github/workflows/ai-implement-gap-fill.yml", "name: edited\n")
    assert not any(r.ok for r in backend.check([sample_mapping()]))
    db.session.expire_all()
    assert db.session.get(StoredSessionPackage, row.sha256).last_pinned_at == long_ago  # none current
    assert db.session.scalar(db.select(db.func.count()).select_from(StoredSessionPackage)) == 1


# -- the public URL runners reach ------------------------------------------------------------------


@pytest.mark.parametrize(("url", "host"), [
    ("http://127.0.0.1:8000", "127.0.0.1"),
    ("http://127.3.2.1", "127.3.2.1"),
    ("https://localhost:8443/aiimpl", "localhost"),
    ("http://LocalHost", "localhost"),
    ("http://app.localhost", "app.localhost"),
    ("http://[::1]:8000", "::1"),
    ("http://0.0.0.0:8000", "0.0.0.0"),
    ("http://[::]", "::"),
    ("http://[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
])
def test_check_a_public_url_only_this_host_reaches_fails(
    gh: FakeGitHub, gh_config_backend: Any, url: str, host: str
) -> None:
    """GitHub's runners cannot reach it: no session could install the session program or report."""
    backend = gh_config_backend({"AIIMPL_PUBLIC_URL": url})
    backend.sync_workflows(sample_mapping())
    results = list(backend.check([sample_mapping(), sample_mapping(team_key="OPS")]))
    assert results[0] == CheckResult(
        "public URL", False,
        f"AIIMPL_PUBLIC_URL names {host}, an address of this host only: GitHub's runners cannot reach it, so "
        "their sessions can neither install the session program from it nor report to it and every job of "
        "ENG, OPS fails; set it to the URL runners reach this orchestrator at",
    )
    assert [(r.name, r.ok) for r in results[1:]] == [
        ("workflow acme/api", True), ("gap-fill workflow acme/api", True)
    ]


def test_check_a_local_public_url_with_a_session_package_of_its_own(
    gh: FakeGitHub, gh_config_backend: Any
) -> None:
    wheel = "https://files.acme.example/aiimpl_core-0.1.0-py3-none-any.whl"
    backend = gh_config_backend({"AIIMPL_PUBLIC_URL": "http://127.0.0.1:8000",
                                 "AIIMPL_GHA_SESSION_PACKAGE": wheel})
    results = list(backend.check([sample_mapping()]))
    assert results[0].name == "public URL" and not results[0].ok
    assert "so their sessions cannot report to it and every job of ENG fails" in results[0].detail
    # with settings the workflows cannot install, both lines
    broken = gh_config_backend({"AIIMPL_PUBLIC_URL": "http://localhost", "AIIMPL_GHA_AGENT_PACKAGE": "a;b"})
    assert [(r.name, r.ok) for r in broken.check([sample_mapping()])] == [
        ("public URL", False), ("session program", False)
    ]


@pytest.mark.parametrize("url", [
    "http://orchestrator.test", "https://10.0.0.5:8000", "http://128.0.0.1", "http://[2001:db8::1]",
    "http://localhost.acme.example", "http://192.168.1.20",
])
def test_check_any_other_public_url_adds_no_line(gh: FakeGitHub, gh_config_backend: Any, url: str) -> None:
    backend = gh_config_backend({"AIIMPL_PUBLIC_URL": url})
    backend.sync_workflows(sample_mapping())
    assert [(r.name, r.ok) for r in backend.check([sample_mapping()])] == [
        ("workflow acme/api", True), ("gap-fill workflow acme/api", True)
    ]
    assert list(gh_config_backend({"AIIMPL_PUBLIC_URL": "http://127.0.0.1"}).check([])) == []


def test_check_public_url_row_in_the_report(app: Any, gh: FakeGitHub) -> None:
    add_mapping(repo="api")
    app.config["AIIMPL_PUBLIC_URL"] = "http://127.0.0.1:8000"
    rows = [r for r in run_checks() if r.provider == "github-actions"]
    assert [(r.name, r.status) for r in rows][0] == ("public URL", FAILED)
    assert rows[0].detail.startswith("AIIMPL_PUBLIC_URL names 127.0.0.1, an address of this host only")
