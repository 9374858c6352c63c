"""`aiimpl demo` walks one issue from Triggered to PR opened on a fresh directory, with no account."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

from aiimpl_core.testing.ports import free_port


def _hostile_home(tmp_path) -> str:
    """A home whose git settings would fail every commit: signing without a key, a refusing hook."""
    home, hooks = tmp_path / "home", tmp_path / "home" / "hooks"
    hooks.mkdir(parents=True)
    (hooks / "pre-commit").write_text("#!/bin/sh\necho refused by the operator's hook >&2\nexit 1\n")
    (hooks / "pre-commit").chmod(0o755)
    (home / ".gitconfig").write_text(f"[commit]\n\tgpgsign = true\n[core]\n\thooksPath = {hooks}\n")
    return str(home)


def test_demo_opens_a_pr_with_the_reference_comments(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIIMPL_", "RUNNER_MODE"))}
    # the operator's own git settings are not the demo's (nor its session's)
    env["HOME"] = _hostile_home(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "aiimpl_core.cli", "demo", "--dir", str(tmp_path / "demo"),
         "--port", str(free_port()), "--exit-when-done", "--timeout", "120"],
        env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    text = out.stdout
    stages = [line.split("stage: ", 1)[1] for line in lines if "DEMO-1 stage: " in line]
    assert stages == ["Triggered", "Implementing", "PR opened"]
    expected = [
        "🚀 Session machine created. Cloning repo and running setup…",
        "✅ Environment ready. Claude is implementing…",
        "📝 Claude finished. PR #1 opened: ",
        "🧪 Running verification script…",
        "✅ Verification passed",
        "🧹 Session machine cleaned up. Duration: ",
    ]
    positions = [text.index(e) for e in expected]
    assert positions == sorted(positions), "progress comments in the reference's order"
    transitions = [line.strip() for line in lines if line.strip().startswith("job 1 (DEMO-1)")]
    assert transitions == ["job 1 (DEMO-1) created: unknown", "job 1 (DEMO-1): unknown -> dispatched",
                           "job 1 (DEMO-1): dispatched -> running", "job 1 (DEMO-1): running -> completed"]
    assert "PR opened: http://127.0.0.1:" in text
    assert "Sandbox" in text or "sandbox" in text
    # the local repository really got the branch with the agent's change
    branches = subprocess.run(["git", "--git-dir", str(tmp_path / "demo/git/sandbox/demo-app.git"), "branch"],
                              capture_output=True, text=True, check=True).stdout
    assert "ai/DEMO-1" in branches


def _demo(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIIMPL_", "RUNNER_MODE"))}
    return subprocess.run([sys.executable, "-m", "aiimpl_core.cli", "demo", *args, "--exit-when-done",
                           "--timeout", "5"], env=env, capture_output=True, text=True, timeout=120, cwd=cwd)


def test_demo_on_a_busy_port_touches_nothing_on_disk(tmp_path):
    workdir = tmp_path / "mine"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("important")
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / ".aiimpl-demo").write_text("")
    (tmp_path / "demo" / "aiimpl-demo.db").write_text("an earlier demo's")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for where in (workdir, tmp_path / "demo"):
            out = _demo("--dir", str(where), "--port", str(port), cwd=tmp_path)
            assert out.returncode == 1
            assert out.stderr.strip() == (f"Error: port {port} is not free (Address already in use): "
                                          "pick another with --port")
    assert (workdir / "notes.txt").read_text() == "important"
    assert (tmp_path / "demo" / "aiimpl-demo.db").read_text() == "an earlier demo's"


def test_demo_refuses_a_directory_it_did_not_make(tmp_path):
    workdir = tmp_path / "mine"
    workdir.mkdir()
    (workdir / "notes.txt").write_text("important")
    out = _demo("--dir", str(workdir), "--port", str(free_port()), cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip() == (f"Error: {workdir} is not empty and was not made by `aiimpl demo`: "
                                  "pick an empty or new directory with --dir")
    assert (workdir / "notes.txt").read_text() == "important"
    assert sorted(p.name for p in workdir.iterdir()) == ["notes.txt"]


def test_demo_empties_only_its_own_working_directory(tmp_path):
    from aiimpl_core.demo.run import MARKER, prepare_workdir

    new = tmp_path / "new" / "demo"
    prepare_workdir(str(new)).close()
    assert sorted(p.name for p in new.iterdir()) == [MARKER]
    (new / "git").mkdir()
    (new / "aiimpl-demo.db").write_text("earlier")
    prepare_workdir(str(new)).close()  # made by the demo: emptied
    assert sorted(p.name for p in new.iterdir()) == [MARKER]
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare_workdir(str(empty)).close()  # an empty directory is fine
    assert sorted(p.name for p in empty.iterdir()) == [MARKER]


def test_a_second_demo_on_the_working_directory_of_a_running_one_leaves_it_alone(tmp_path):
    """The running demo holds its directory: one started on it meanwhile is refused in one line,
    rather than emptying the database and repository under the running one."""
    from aiimpl_core.demo.run import MARKER, prepare_workdir

    workdir = tmp_path / "demo"
    with prepare_workdir(str(workdir)):
        (workdir / "aiimpl-demo.db").write_text("in use")
        out = _demo("--dir", str(workdir), "--port", str(free_port()), cwd=tmp_path)
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert out.stderr.strip() == (f"Error: {workdir} is used by another `aiimpl demo` that is running: "
                                      "stop that one, or pick another directory with --dir")
        assert (workdir / "aiimpl-demo.db").read_text() == "in use"
    # once it has stopped, the directory is the next demo's
    prepare_workdir(str(workdir)).close()
    assert sorted(p.name for p in workdir.iterdir()) == [MARKER]


def test_demo_port_must_be_a_tcp_port(tmp_path):
    out = _demo("--dir", str(tmp_path / "demo"), "--port", "99999", cwd=tmp_path)
    assert out.returncode == 2 and "99999 is not in the range 1<=x<=65535" in out.stderr
    assert not (tmp_path / "demo").exists()


def test_demo_on_a_port_taken_after_its_check_says_so_in_one_line(tmp_path, monkeypatch):
    """The port is looked at before the demo starts; one taken meanwhile is said the same way, and
    the sandbox GitHub is stopped, rather than the server printing its own lines and exiting."""
    import pytest

    from aiimpl_core.demo import run
    from aiimpl_core.errors import AiimplError

    stopped = []
    real_stop = run.SandboxGitHub.stop
    monkeypatch.setattr(run, "check_port", lambda port: None)
    monkeypatch.setattr(run.SandboxGitHub, "stop", lambda self: (stopped.append(self), real_stop(self)))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(AiimplError) as raised:
            run.run_demo(str(tmp_path / "demo"), port, exit_when_done=True, timeout=5, echo=lambda line: None)
    assert raised.value.message == (f"port {port} is not free (Address already in use): "
                                    "pick another with --port")
    assert len(stopped) == 1


def test_the_demos_repository_passes_its_github_check(tmp_path):
    """The Checks panel of the demo failed its own repository: the sandbox GitHub did not answer the
    listing of runs that the check of a personal token reads (an HTML 404)."""
    from aiimpl_core import create_app
    from aiimpl_core.demo.run import OWNER, REPO, make_repository
    from aiimpl_core.demo.sandbox_github import SandboxGitHub
    from aiimpl_core.github import from_app
    from aiimpl_core.services.checks import OK, _github_row

    github = SandboxGitHub(make_repository(str(tmp_path))).start()
    try:
        app = create_app({"AIIMPL_DATABASE_URL": "sqlite://", "AIIMPL_GITHUB_API_URL": github.api_url,
                          "AIIMPL_GITHUB_TOKEN": "sandbox-token"}, load_entrypoints=False, environ={})
        with app.app_context():
            row = _github_row(from_app(), f"{OWNER}/{REPO}")
            assert (row.status, row.detail) == (OK, "the personal token reads the repository")
            assert _github_row(from_app(), f"{OWNER}/nothing-here").status != OK
    finally:
        github.stop()
