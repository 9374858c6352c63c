"""`aiimpl demo` walks one issue from Triggered to PR opened on a fresh directory, with no account."""
from __future__ import annotations

import os
import socket
import subprocess
import sys


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_opens_a_pr_with_the_reference_comments(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIIMPL_", "RUNNER_MODE"))}
    out = subprocess.run(
        [sys.executable, "-m", "aiimpl_core.cli", "demo", "--dir", str(tmp_path / "demo"),
         "--port", str(_port()), "--exit-when-done", "--timeout", "120"],
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
    assert "running -> completed" in text
    assert "PR opened: http://127.0.0.1:" in text
    assert "Sandbox" in text or "sandbox" in text
    # the local repository really got the branch with the agent's change
    branches = subprocess.run(["git", "--git-dir", str(tmp_path / "demo/git/sandbox/demo-app.git"), "branch"],
                              capture_output=True, text=True, check=True).stdout
    assert "ai/DEMO-1" in branches
