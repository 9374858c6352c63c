"""``aiimpl plugins list`` and the load log, through the real command line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import Site, backend_module


def aiimpl(*args: str, site: Site, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join([str(site.path), environ.get("PYTHONPATH", "")])
    environ["AIIMPL_DATABASE_URL"] = f"sqlite:///{tmp_path}/x.db"
    environ["AIIMPL_SECRET_KEY"] = "k"
    environ.pop("AIIMPL_DISABLED_PLUGINS", None)
    environ.update(env)
    return subprocess.run([sys.executable, "-m", "aiimpl_core.cli", *args], env=environ, capture_output=True,
                          text=True, timeout=60)


def test_plugins_list_aligns_long_names_and_shows_disabled_plugins(dists: Site, tmp_path: Path):
    dists.add("acme-a-distribution-with-a-rather-long-name", {"spool": "acme_long"},
              {"acme_long": backend_module("long-spool")})
    dists.add("acme-beta", {"spool": "acme_beta"}, {"acme_beta": backend_module("beta-spool")})

    out = aiimpl("plugins", "list", site=dists, tmp_path=tmp_path,
                 AIIMPL_DISABLED_PLUGINS="bedrock,acme-beta:spool")

    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = lines[0]
    assert header.split() == ["NAME", "DISTRIBUTION", "VERSION", "STATUS", "PROVIDES"]
    rows = {line.split()[0]: line for line in lines[1:] if not line.startswith(" ")}
    long_row = rows["acme-a-distribution-with-a-rather-long-name:spool"]
    assert long_row.split()[1:] == [
        "acme-a-distribution-with-a-rather-long-name", "1.0", "loaded", "runner:long-spool"
    ]
    starts = [header.index(column) for column in ("DISTRIBUTION", "VERSION", "STATUS", "PROVIDES")]
    for row in rows.values():
        assert [n for n in range(1, len(row)) if row[n - 1] == " " and row[n] != " "] == starts, out.stdout
    assert rows["bedrock"].split()[3:] == ["disabled", "-"]
    assert rows["acme-beta:spool"].split()[3] == "disabled"
    assert "{" not in out.stdout and out.stderr == ""


def test_plugins_list_shows_a_collision_with_the_list_and_exits_1(dists: Site, tmp_path: Path):
    dists.add("acme-one", {"one": "acme_one"}, {"acme_one": backend_module("same")})
    dists.add("acme-two", {"two": "acme_two"}, {"acme_two": backend_module("same")})

    out = aiimpl("plugins", "list", site=dists, tmp_path=tmp_path)

    assert out.returncode == 1
    rows = {line.split()[0]: line for line in out.stdout.splitlines() if not line.startswith(" ")}
    assert {"anthropic", "bedrock", "one", "two"} <= set(rows)
    statuses = sorted(rows[name].split()[3] for name in ("one", "two"))
    assert statuses == ["failed", "loaded"]
    reason = "runner provider 'same' is registered by two plugins"
    assert f"    error: {reason}" in out.stdout
    assert out.stderr.count(reason) == 1 and "the server will not start" in out.stderr


def test_a_load_error_is_logged_once_per_command(dists: Site, tmp_path: Path):
    dists.add("acme-broken", {"broken": "acme_broken"}, {"acme_broken": "import acme_no_such_module\n"})
    dists.add("acme-unmarked", {"unmarked": "acme_unmarked"},
              {"acme_unmarked": backend_module("unmarked", hookimpl=False)})

    out = aiimpl("openapi", site=dists, tmp_path=tmp_path)

    assert out.returncode == 0, out.stderr
    assert out.stderr.count("acme_no_such_module") == 1, out.stderr
    assert out.stderr.count("is not decorated with @aiimpl_core.hookimpl") == 1, out.stderr


def test_plugins_list_json_has_one_row_per_distribution_and_the_warnings(dists: Site, tmp_path: Path):
    import json

    dists.add("acme-alpha", {"spool": "acme_alpha"}, {"acme_alpha": backend_module("alpha-spool")})
    dists.add("acme-beta", {"spool": "acme_beta"},
              {"acme_beta": backend_module("beta-spool", hookimpl=False)})

    out = aiimpl("plugins", "list", "--json", site=dists, tmp_path=tmp_path)

    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["acme-alpha:spool"]["provides"] == [
        {"kind": "runner", "id": "alpha-spool", "name": "Backend alpha-spool"}
    ]
    assert (rows["acme-beta:spool"]["status"], rows["acme-beta:spool"]["provides"]) == ("loaded", [])
    assert rows["acme-beta:spool"]["warnings"] == [
        "aiimpl_register_runner_backends is not decorated with @aiimpl_core.hookimpl: it is never called"
    ]
