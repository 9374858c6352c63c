"""The session program wheels the GitHub Actions workflows pin are kept: a workflow synced before a
deploy that changed the core's files still installs the wheel it was synced with, served by its
hash (``GET /runner/session-package/<sha256>/<file>``), and pip's ``#sha256`` check passes; the
wheel is stored once however many syncs pin it at the same moment; the housekeeping removes the
wheels no one pinned for long; a hash and name neither running nor kept is a 404."""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

import aiimpl_core
from aiimpl_core import session_package
from aiimpl_core.errors import ConfigError
from aiimpl_core.extensions import db
from aiimpl_core.orm import StoredSessionPackage, utcnow
from aiimpl_core.services import housekeeping
from aiimpl_core.testing.orchestrator import at_once, fresh

PACKAGE_DIR = Path(aiimpl_core.__file__).parent
VERSION = importlib.metadata.version("aiimpl-core")
WHEEL = f"aiimpl_core-{VERSION}-py3-none-any.whl"
IMMUTABLE = "public, max-age=31536000, immutable"


def pip(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The venv's pip, with no package index: nothing but the requirement named is installed."""
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--no-cache-dir",
         "--disable-pip-version-check", "--quiet", *args],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )


def installed_version(target: Path) -> str:
    script = ("import importlib.metadata, aiimpl_core.session.runner; "
              "print(importlib.metadata.version('aiimpl-core'))")
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(target)},
                          cwd=target, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def deployed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str | None = None
) -> session_package.SessionPackage:
    """A deploy that changed the core's files: the wheel of a modified copy of the package directory
    becomes the running one (under the same version, or another one)."""
    copy = tmp_path / "deployed" / "aiimpl_core"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    runner = copy / "session" / "runner.py"
    runner.write_text(runner.read_text() + "\n# changed by the deploy\n")
    if version is None:
        with monkeypatch.context() as patch:
            patch.setattr(aiimpl_core, "__file__", str(copy / "__init__.py"))
            package = session_package.build_running()
    else:
        metadata = f"Metadata-Version: 2.1\nName: aiimpl-core\nVersion: {version}\n"
        package = session_package.build(copy, name="aiimpl-core", version=version, metadata=metadata)
    assert package.sha256 != session_package.current().sha256
    monkeypatch.setattr(session_package, "_current", package)
    return package


def kept() -> dict[str, StoredSessionPackage]:
    fresh()
    return {row.sha256: row for row in db.session.scalars(db.select(StoredSessionPackage))}


def package_of(content: bytes, version: str = "0.0.1") -> session_package.SessionPackage:
    return session_package.SessionPackage(f"aiimpl_core-{version}-py3-none-any.whl", content,
                                          hashlib.sha256(content).hexdigest())


# -- a deploy between the sync and the session --------------------------------------------------


@pytest.fixture
def gha_backend(app: Any, cb_live_server: str) -> Iterator[Any]:
    """The github-actions backend against a fake GitHub, its workflows installing from the test app
    served over HTTP (``AIIMPL_PUBLIC_URL``)."""
    backend_module = pytest.importorskip("aiimpl_gha.backend")
    from aiimpl_core.github.app_auth import TOKENS
    from aiimpl_core.testing.contract import make_context
    from aiimpl_core.testing.fake_github import FakeGitHub

    with FakeGitHub() as gh:
        gh.add_repo("acme", "api")
        gh.add_installation("acme")
        backend = backend_module.GitHubActionsBackend(make_context({
            "AIIMPL_PUBLIC_URL": cb_live_server, "AIIMPL_GITHUB_API_URL": gh.url,
            "AIIMPL_GITHUB_APP_ID": str(gh.app_id), "AIIMPL_GITHUB_PRIVATE_KEY": gh.private_key_pem,
        }))
        backend.gh = gh
        yield backend
    TOKENS.clear()


def workflow_requirement(backend: Any) -> str:
    """What the synced implementation workflow has pip install as the session program."""
    text = backend.gh.file("acme", "api", ".github/workflows/ai-implement.yml")
    steps = next(iter(yaml.safe_load(text)["jobs"].values()))["steps"]
    run = next(s["run"] for s in steps if "pip install" in s.get("run", ""))
    line = next(x for x in run.splitlines() if "pip install" in x)
    (requirement,) = shlex.split(line.split("--upgrade", 1)[1])
    return requirement


@pytest.mark.parametrize("version", [None, "9.9.9"], ids=["same-version", "other-version"])
def test_a_workflow_synced_before_a_deploy_still_installs_its_wheel(
    app: Any, client: Any, gha_backend: Any, cb_live_server: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, version: str | None,
) -> None:
    from aiimpl_core.testing.contract import sample_mapping

    before = session_package.current()
    gha_backend.sync_workflows(sample_mapping())
    requirement = workflow_requirement(gha_backend)
    assert requirement == (f"aiimpl-core @ {cb_live_server}/runner/session-package/{before.sha256}/{WHEEL}"
                           f"#sha256={before.sha256}")
    assert set(kept()) == {before.sha256}

    now = deployed(tmp_path, monkeypatch, version)
    # the wheel the workflow pins, by its hash: the same bytes as before the deploy
    resp = client.get(f"/runner/session-package/{before.sha256}/{WHEEL}")
    assert resp.status_code == 200 and resp.data == before.data
    assert resp.headers["Cache-Control"] == IMMUTABLE
    # pip fetches it from the orchestrator over HTTP and checks its hash
    done = pip("--target", str(tmp_path / "site"), requirement, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert installed_version(tmp_path / "site") == VERSION
    # the file name alone now answers the deployed wheel (or nothing, under another version): a
    # wheel URL without a hash set by hand no longer installs the wheel it was set to
    legacy = client.get(f"/runner/session-package/{WHEEL}")
    if version is None:
        assert legacy.status_code == 200 and legacy.data == now.data
    else:
        assert legacy.status_code == 404
        assert client.get(f"/runner/session-package/{now.filename}").data == now.data
    # the next sync pins the deployed wheel; both are kept
    gha_backend.sync_workflows(sample_mapping())
    assert f"/runner/session-package/{now.sha256}/{now.filename}#sha256={now.sha256}" in workflow_requirement(
        gha_backend)
    assert set(kept()) == {before.sha256, now.sha256}


def test_pip_refuses_a_wheel_whose_bytes_are_not_the_pinned_ones(
    app: Any, cb_live_server: str, tmp_path: Path
) -> None:
    """What the hash in the path spares a workflow after a deploy: the same URL holding other bytes."""
    session_package.pin(package_of(b"kept"))
    other = hashlib.sha256(b"other").hexdigest()
    kept_sha = hashlib.sha256(b"kept").hexdigest()
    url = (f"{cb_live_server}/runner/session-package/{kept_sha}/aiimpl_core-0.0.1-py3-none-any.whl"
           f"#sha256={other}")
    done = pip("--target", str(tmp_path / "site"), f"aiimpl-core @ {url}", cwd=tmp_path)
    assert done.returncode != 0 and "HASH" in done.stderr.upper(), done.stderr


# -- the route ----------------------------------------------------------------------------------


def test_the_running_wheel_is_served_by_its_hash_as_immutable(client: Any) -> None:
    package = session_package.current()
    url = f"/runner/session-package/{package.sha256}/{package.filename}"
    resp = client.get(url)
    assert resp.status_code == 200 and resp.data == package.data
    assert resp.headers["Cache-Control"] == IMMUTABLE
    assert resp.headers["ETag"] == f'"{package.sha256}"'
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Disposition"] == f"attachment; filename={package.filename}"
    again = client.get(url, headers={"If-None-Match": f'"{package.sha256}"'})
    assert again.status_code == 304 and again.data == b""
    assert kept() == {}  # served whether kept or not: nothing stored by serving it


def test_a_kept_wheel_is_served_by_its_hash_and_name(client: Any) -> None:
    old = package_of(b"an older wheel", "0.0.9")
    session_package.pin(old)
    resp = client.get(f"/runner/session-package/{old.sha256}/{old.filename}")
    assert resp.status_code == 200 and resp.data == b"an older wheel"
    assert resp.headers["Cache-Control"] == IMMUTABLE
    head = client.head(f"/runner/session-package/{old.sha256}/{old.filename}")
    assert head.status_code == 200 and head.headers["Content-Length"] == "14"


def _not_found_paths() -> list[tuple[str, str]]:
    running = session_package.current()
    old = package_of(b"an older wheel", "0.0.9")
    unknown = hashlib.sha256(b"never pinned").hexdigest()
    return [
        ("unknown-hash", f"{unknown}/{running.filename}"),
        ("kept-hash-other-name", f"{old.sha256}/{running.filename}"),
        ("running-hash-other-name", f"{running.sha256}/{old.filename}"),
        ("upper-case-hash", f"{old.sha256.upper()}/{old.filename}"),
        ("short-hash", f"{old.sha256[:40]}/{old.filename}"),
        ("kept-name-alone", old.filename),
        ("extra-segment", f"{old.sha256}/{old.filename}/x"),
        ("dot-dot", f"{old.sha256}/..%2F..%2Finstance%2Faiimpl.db"),
        ("nul", f"{old.sha256}/%00"),
    ]


@pytest.mark.parametrize("case", [name for name, _ in _not_found_paths()])
def test_a_hash_and_name_neither_running_nor_kept_is_404(client: Any, case: str) -> None:
    session_package.pin(package_of(b"an older wheel", "0.0.9"))
    path = dict(_not_found_paths())[case]
    resp = client.get(f"/runner/session-package/{path}")
    assert resp.status_code == 404
    assert resp.get_json() == {"error": "package_not_found"}
    assert resp.headers["Cache-Control"] == "no-store"


def test_without_an_installed_distribution_the_kept_wheels_are_still_served(
    client: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    old = package_of(b"an older wheel", "0.0.9")
    session_package.pin(old)

    def not_installed() -> session_package.SessionPackage:
        raise ConfigError("the version of this orchestrator's aiimpl-core is not known (not installed)")

    monkeypatch.setattr(session_package, "current", not_installed)
    assert client.get(f"/runner/session-package/{old.sha256}/{old.filename}").data == b"an older wheel"
    assert client.get(f"/runner/session-package/{WHEEL}").status_code == 404
    assert "the session package cannot be served: the version of this orchestrator's" in caplog.text


def test_both_routes_are_described_in_the_openapi_document(client: Any) -> None:
    paths = client.get("/api/openapi.json").get_json()["paths"]
    op = paths["/runner/session-package/{sha256}/{filename}"]["get"]
    assert op["security"] == []
    assert [p["name"] for p in op["parameters"]] == ["sha256", "filename"]
    assert set(op["responses"]) == {"200", "304", "404"}
    assert "immutable" in op["responses"]["200"]["headers"]["Cache-Control"]["description"]
    assert "no-cache" in paths["/runner/session-package/{filename}"]["get"]["responses"]["200"]["headers"][
        "Cache-Control"]["description"]


# -- keeping a wheel: once, whoever pins it at the same moment -----------------------------------------


def test_a_wheel_is_stored_once_and_its_pin_moves(app: Any) -> None:
    wheel = package_of(b"wheel")
    first = utcnow() - timedelta(days=3)
    pinned = session_package.pin(wheel, now=first)
    assert (pinned.filename, pinned.sha256) == (wheel.filename, wheel.sha256)
    assert pinned.path == f"/runner/session-package/{wheel.sha256}/{wheel.filename}"
    assert pinned.url("https://ai.acme.example/x/") == (
        f"https://ai.acme.example/x{pinned.path}#sha256={wheel.sha256}")
    session_package.pin(wheel)
    (row,) = kept().values()
    assert (row.filename, bytes(row.data), row.created_at) == (wheel.filename, b"wheel", first)
    assert row.last_pinned_at > first


def test_syncs_pinning_at_once_store_one_row(app: Any) -> None:
    """Several workers or hosts syncing at the same moment: none fails, one row."""
    wheel = package_of(b"x" * 300_000)
    answers = at_once(app, lambda _client: session_package.pin(wheel), 6, timeout=60)
    assert {a.sha256 for a in answers} == {wheel.sha256}
    (row,) = kept().values()
    assert bytes(row.data) == wheel.data


def test_processes_pinning_at_once_store_one_row(app: Any, database_url: str, tmp_path: Path) -> None:
    script = tmp_path / "pin.py"
    script.write_text(
        "import hashlib, sys\n"
        "from aiimpl_core import create_app, session_package\n"
        "app = create_app({'AIIMPL_DATABASE_URL': sys.argv[1], 'AIIMPL_SECRET_KEY': 'k' * 32},"
        " load_entrypoints=False, environ={})\n"
        "data = b'wheel of processes'\n"
        "package = session_package.SessionPackage('aiimpl_core-0.0.1-py3-none-any.whl', data,"
        " hashlib.sha256(data).hexdigest())\n"
        "with app.app_context():\n"
        "    print('ready', flush=True)\n"
        "    sys.stdin.readline()\n"
        "    session_package.pin(package)\n"
    )
    runs = [subprocess.Popen([sys.executable, str(script), database_url], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for run in runs:
        assert run.stdout is not None and run.stdout.readline() == "ready\n"
    for run in runs:  # released together once every process is ready
        assert run.stdin is not None
        run.stdin.write("\n")
        run.stdin.flush()
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
    assert [bytes(r.data) for r in kept().values()] == [b"wheel of processes"]


# -- housekeeping -------------------------------------------------------------------------------


def test_housekeeping_removes_the_wheels_not_pinned_for_long(
    app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    now = utcnow()
    ages = {"a": 200, "b": 190, "c": 180, "d": 170, "e": 160, "f": 150, "g": 10, "h": 1}
    for name, days in ages.items():
        session_package.pin(package_of(name.encode()), now=now - timedelta(days=days))
    running = session_package.current()
    session_package.pin(running, now=now - timedelta(days=400))  # the running one, however old
    caplog.set_level(logging.INFO, logger="aiimpl_core.services.housekeeping")
    removed = housekeeping.prune(now, batch=2)
    assert removed["session_packages"] == 3
    left = kept()
    # the five pinned last (whatever their age) and the running one stay
    assert set(left) == {hashlib.sha256(n.encode()).hexdigest() for n in "defgh"} | {running.sha256}
    assert "3 session_packages" in caplog.text and "last pinned over 90 days ago" in caplog.text
    assert housekeeping.prune(now)["session_packages"] == 0


def test_housekeeping_keeps_the_wheels_pinned_lately(app: Any) -> None:
    now = utcnow()
    for n in range(8):
        session_package.pin(package_of(bytes([n])), now=now - timedelta(days=89, hours=n))
    assert housekeeping.prune(now)["session_packages"] == 0
    assert len(kept()) == 8
    # a retention of 0 (the guard records kept for good) is no rule of theirs
    assert housekeeping.prune(now + timedelta(days=30), days=0)["session_packages"] == 3
    assert len(kept()) == 5


def test_a_pruned_wheel_is_404_and_a_sync_keeps_it_again(app: Any, client: Any) -> None:
    now = utcnow()
    old = package_of(b"old")
    session_package.pin(old, now=now - timedelta(days=100))
    for n in range(5):
        session_package.pin(package_of(bytes([n])), now=now)
    assert housekeeping.prune(now)["session_packages"] == 1
    assert client.get(f"/runner/session-package/{old.sha256}/{old.filename}").status_code == 404
    session_package.pin(old)
    assert client.get(f"/runner/session-package/{old.sha256}/{old.filename}").data == b"old"
