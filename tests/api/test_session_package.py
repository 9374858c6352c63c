"""``GET /runner/session-package/<filename>``: the orchestrator serves its own session program as a
wheel, which pip installs and which runs; the same files give the same bytes; nothing but the
package's files is in it (no instance folder, database or hidden file); any other name is a 404.
(The URL by hash the workflows pin, and the wheels kept for them: ``test_session_package_pins.py``.)"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata
import io
import os
import shutil
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import aiimpl_core
from aiimpl_core import session_package
from aiimpl_core.errors import ConfigError

PACKAGE_DIR = Path(aiimpl_core.__file__).parent
VERSION = importlib.metadata.version("aiimpl-core")
WHEEL = f"aiimpl_core-{VERSION}-py3-none-any.whl"
SQLITE = b"SQLite format 3\x00" + b"\x00" * 84


def pip(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The venv's pip, offline: nothing but the wheel named is installed."""
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--no-cache-dir",
         "--disable-pip-version-check", "--quiet", *args],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )


def record_rows(data: bytes) -> tuple[list[str], list[list[str]]]:
    archive = zipfile.ZipFile(io.BytesIO(data))
    (record,) = [n for n in archive.namelist() if n.endswith(".dist-info/RECORD")]
    return archive.namelist(), list(csv.reader(io.StringIO(archive.read(record).decode("utf-8"))))


def assert_record_verifies(data: bytes) -> None:
    archive = zipfile.ZipFile(io.BytesIO(data))
    names, rows = record_rows(data)
    assert [row[0] for row in rows] == names  # every entry once, RECORD itself last
    *files, own = rows
    assert own == [names[-1], "", ""]
    for path, digest, size in files:
        content = archive.read(path)
        expected = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
        assert digest == f"sha256={expected}", path
        assert size == str(len(content)), path


# -- the wheel ---------------------------------------------------------------------------------


def test_the_wheel_is_named_and_made_as_the_format_says() -> None:
    package = session_package.current()
    assert package.filename == WHEEL
    assert package.sha256 == hashlib.sha256(package.data).hexdigest()
    assert session_package.current() is package  # built once per process
    archive = zipfile.ZipFile(io.BytesIO(package.data))
    dist_info = f"aiimpl_core-{VERSION}.dist-info"
    assert archive.read(f"{dist_info}/WHEEL").decode() == (
        "Wheel-Version: 1.0\nGenerator: aiimpl-core (session package)\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n"
    )
    metadata = archive.read(f"{dist_info}/METADATA").decode()
    assert "Name: aiimpl-core\n" in metadata and f"Version: {VERSION}\n" in metadata
    assert "aiimpl = aiimpl_core._entry:main" in archive.read(f"{dist_info}/entry_points.txt").decode()
    assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert_record_verifies(package.data)


def test_the_wheel_holds_every_file_of_the_package_and_nothing_else() -> None:
    names, _ = record_rows(session_package.current().data)
    on_disk = sorted(
        f"aiimpl_core/{p.relative_to(PACKAGE_DIR).as_posix()}"
        for p in PACKAGE_DIR.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    package_entries = [n for n in names if not n.startswith(f"aiimpl_core-{VERSION}.dist-info/")]
    assert package_entries == on_disk
    assert "aiimpl_core/session/runner.py" in package_entries
    assert "aiimpl_core/migrations/alembic.ini" in package_entries
    # METADATA, WHEEL, entry_points.txt, the license file METADATA names, RECORD
    assert len(names) == len(package_entries) + 5


def test_the_wheel_holds_the_license_files_its_metadata_names() -> None:
    archive = zipfile.ZipFile(io.BytesIO(session_package.current().data))
    dist_info = f"aiimpl_core-{VERSION}.dist-info"
    metadata = archive.read(f"{dist_info}/METADATA").decode()
    assert "License-Expression: Apache-2.0\n" in metadata and "License-File: LICENSE\n" in metadata
    assert archive.read(f"{dist_info}/licenses/LICENSE") == (PACKAGE_DIR.parent / "LICENSE").read_bytes()


@pytest.mark.parametrize("installed_as", ["wheel", "egg-info"])
def test_the_license_file_is_found_as_an_installed_wheel_and_a_source_checkout_hold_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, installed_as: str
) -> None:
    metadata = f"Metadata-Version: 2.4\nName: aiimpl-core\nVersion: {VERSION}\nLicense-File: LICENSE\n"
    if installed_as == "wheel":  # site-packages/aiimpl_core-X.dist-info/licenses/LICENSE
        info = tmp_path / f"aiimpl_core-{VERSION}.dist-info"
        (info / "licenses").mkdir(parents=True)
        (info / "METADATA").write_text(metadata)
        (info / "licenses" / "LICENSE").write_text("terms of the wheel\n")
    else:  # checkout/aiimpl_core.egg-info/PKG-INFO beside checkout/LICENSE
        info = tmp_path / "aiimpl_core.egg-info"
        info.mkdir()
        (info / "PKG-INFO").write_text(metadata)
        (tmp_path / "LICENSE").write_text("terms of the checkout\n")
    monkeypatch.setattr(importlib.metadata, "distribution",
                        lambda name: importlib.metadata.PathDistribution(info))
    archive = zipfile.ZipFile(io.BytesIO(session_package.build_running().data))
    terms = archive.read(f"aiimpl_core-{VERSION}.dist-info/licenses/LICENSE").decode()
    assert terms == ("terms of the wheel\n" if installed_as == "wheel" else "terms of the checkout\n")


def test_license_files_are_written_under_the_dist_info_and_listed_in_the_record(tmp_path: Path) -> None:
    (tmp_path / "aiimpl_core").mkdir()
    (tmp_path / "aiimpl_core" / "__init__.py").write_text("")
    found = session_package.build(tmp_path / "aiimpl_core", name="aiimpl-core", version="1.0",
                                  metadata="Name: x\nLicense-File: LICENSE\n",
                                  licenses={"LICENSE": b"terms\n"})
    assert zipfile.ZipFile(io.BytesIO(found.data)).namelist() == [
        "aiimpl_core/__init__.py",
        "aiimpl_core-1.0.dist-info/METADATA",
        "aiimpl_core-1.0.dist-info/WHEEL",
        "aiimpl_core-1.0.dist-info/licenses/LICENSE",
        "aiimpl_core-1.0.dist-info/RECORD",
    ]
    assert_record_verifies(found.data)


def test_threads_asking_at_once_share_one_build(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[int] = []
    wheel = session_package.SessionPackage(WHEEL, b"wheel", hashlib.sha256(b"wheel").hexdigest())

    def slow_build() -> session_package.SessionPackage:
        built.append(1)
        time.sleep(0.2)
        return wheel

    monkeypatch.setattr(session_package, "_current", None)
    monkeypatch.setattr(session_package, "build_running", slow_build)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: session_package.current(), range(8)))
    assert built == [1] and all(a is wheel for a in answers)


def test_the_same_files_give_the_same_bytes(tmp_path: Path) -> None:
    first = session_package.build_running()
    assert session_package.build_running().data == first.data
    # copies made at other times, with other time stamps: the same bytes
    copies = []
    for n, stamp in enumerate((1_000_000_000, 1_700_000_000)):
        copy = tmp_path / str(n) / "aiimpl_core"
        shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for path in copy.rglob("*"):
            os.utime(path, (stamp, stamp))
        copies.append(session_package.build(copy, name="aiimpl-core", version=VERSION, metadata="Name: x\n"))
    assert copies[0].data == copies[1].data and copies[0].sha256 == copies[1].sha256
    # and another file is another hash
    (tmp_path / "0" / "aiimpl_core" / "session" / "runner.py").write_text("# changed\n")
    changed = session_package.build(tmp_path / "0" / "aiimpl_core", name="aiimpl-core", version=VERSION,
                                    metadata="Name: x\n")
    assert changed.sha256 != copies[1].sha256 and changed.filename == copies[1].filename


def _installed(target: Path) -> subprocess.CompletedProcess[str]:
    script = ("import importlib.metadata, aiimpl_core, aiimpl_core.session, aiimpl_core.session.runner; "
              "print(aiimpl_core.__file__); print(importlib.metadata.version('aiimpl-core'))")
    env = {**os.environ, "PYTHONPATH": str(target)}
    return subprocess.run([sys.executable, "-c", script], env=env, cwd=target, capture_output=True,
                          text=True, timeout=120)


def test_the_served_wheel_installs_and_runs(client: Any, tmp_path: Path) -> None:
    resp = client.get(f"/runner/session-package/{WHEEL}")
    assert resp.status_code == 200
    wheel = tmp_path / WHEEL
    wheel.write_bytes(resp.data)
    target = tmp_path / "site"
    done = pip("--target", str(target), str(wheel), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ran = _installed(target)
    assert ran.returncode == 0, ran.stderr
    module, version = ran.stdout.split()
    assert Path(module).is_relative_to(target) and version == VERSION
    # the console script the workflows run, from the wheel's entry points
    help_ = subprocess.run([str(target / "bin" / "aiimpl"), "session", "--help"], capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(target)}, timeout=120)
    assert help_.returncode == 0 and "run" in help_.stdout, help_.stderr


def test_pip_installs_the_requirement_the_workflows_write_and_checks_its_hash(tmp_path: Path) -> None:
    package = session_package.current()
    wheel = tmp_path / package.filename
    wheel.write_bytes(package.data)
    good = pip("--target", str(tmp_path / "good"), f"aiimpl-core @ {wheel.as_uri()}#sha256={package.sha256}",
               cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert _installed(tmp_path / "good").returncode == 0
    other = hashlib.sha256(b"another wheel").hexdigest()
    bad = pip("--target", str(tmp_path / "bad"), f"aiimpl-core @ {wheel.as_uri()}#sha256={other}",
              cwd=tmp_path)
    assert bad.returncode != 0 and "HASH" in bad.stderr.upper(), bad.stderr
    assert not (tmp_path / "bad" / "aiimpl_core").exists()


# -- what is never in it ---------------------------------------------------------------------------


def test_no_instance_folder_database_hidden_file_or_link_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "aiimpl_core"
    (pkg / "ui" / "static").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "ui" / "static" / "app.js").write_text("1;")
    (pkg / "run.sh").write_text("#!/bin/sh\n")
    (pkg / "run.sh").chmod(0o755)
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (pkg / "stale.pyc").write_bytes(b"\0")
    (pkg / ".env").write_text("AIIMPL_SECRET_KEY=s3cr3t\n")
    (pkg / ".git").mkdir()
    (pkg / ".git" / "config").write_text("[core]\n")
    (pkg / "instance").mkdir()
    (pkg / "instance" / "settings.cfg").write_text("SECRET=s3cr3t\n")
    (pkg / "aiimpl.db").write_bytes(SQLITE)
    (pkg / "aiimpl.db-wal").write_bytes(b"\0")
    (pkg / "jobs.sqlite3").write_bytes(b"\0")
    (pkg / "notes.txt").write_bytes(SQLITE)  # a database by its first bytes, whatever its name
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    (pkg / "key.pem").symlink_to(outside / "key.pem")
    (pkg / "linked").symlink_to(outside, target_is_directory=True)
    monkeypatch.setenv("AIIMPL_INSTANCE_PATH", str(pkg / "instance"))
    found = session_package.build(pkg, name="aiimpl-core", version="0.1.dev3+gabc1234", metadata="Name: x\n",
                                  exclude=[os.environ["AIIMPL_INSTANCE_PATH"]])
    assert found.filename == "aiimpl_core-0.1.dev3+gabc1234-py3-none-any.whl"
    archive = zipfile.ZipFile(io.BytesIO(found.data))
    assert archive.namelist() == [
        "aiimpl_core/__init__.py",
        "aiimpl_core/run.sh",
        "aiimpl_core/ui/static/app.js",
        "aiimpl_core-0.1.dev3+gabc1234.dist-info/METADATA",
        "aiimpl_core-0.1.dev3+gabc1234.dist-info/WHEEL",
        "aiimpl_core-0.1.dev3+gabc1234.dist-info/RECORD",
    ]
    assert archive.getinfo("aiimpl_core/run.sh").external_attr >> 16 & 0o777 == 0o755
    assert archive.getinfo("aiimpl_core/__init__.py").external_attr >> 16 & 0o777 == 0o644
    assert b"s3cr3t" not in found.data  # (stored deflated: the names above are all there is)
    assert_record_verifies(found.data)


def test_the_running_package_leaves_out_an_instance_folder_inside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "aiimpl_core"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (copy / "instance").mkdir()
    (copy / "instance" / "aiimpl.sqlite.bak").write_text("jobs")
    monkeypatch.setenv("AIIMPL_INSTANCE_PATH", str(copy / "instance"))
    monkeypatch.setattr(aiimpl_core, "__file__", str(copy / "__init__.py"))
    names = zipfile.ZipFile(io.BytesIO(session_package.build_running().data)).namelist()
    assert "aiimpl_core/session/runner.py" in names
    assert not any("instance" in n for n in names)


@pytest.mark.parametrize(("name", "version", "expected"), [
    ("aiimpl-core", "0.1.0", "aiimpl_core-0.1.0-py3-none-any.whl"),
    ("AiImpl.Core", "0.1.dev3+g1234abc", "aiimpl_core-0.1.dev3+g1234abc-py3-none-any.whl"),
    ("aiimpl-core", "0.1.0-rc1", "aiimpl_core-0.1.0rc1-py3-none-any.whl"),
])
def test_the_file_name_writes_name_and_version_as_the_format_says(
    tmp_path: Path, name: str, version: str, expected: str
) -> None:
    (tmp_path / "aiimpl_core").mkdir()
    (tmp_path / "aiimpl_core" / "__init__.py").write_text("")
    assert session_package.build(tmp_path / "aiimpl_core", name=name, version=version,
                                 metadata="Name: x\n").filename == expected


# -- the route -------------------------------------------------------------------------------------


def test_the_route_answers_the_wheel_without_authentication(client: Any) -> None:
    package = session_package.current()
    resp = client.get(f"/runner/session-package/{WHEEL}")
    assert resp.status_code == 200
    assert resp.data == package.data
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Length"] == str(len(package.data))
    assert resp.headers["ETag"] == f'"{package.sha256}"'
    assert resp.headers["Cache-Control"] == "public, no-cache"
    assert resp.headers["Content-Disposition"] == f"attachment; filename={WHEEL}"
    again = client.get(f"/runner/session-package/{WHEEL}", headers={"If-None-Match": f'"{package.sha256}"'})
    assert again.status_code == 304 and again.data == b""
    head = client.head(f"/runner/session-package/{WHEEL}")
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(package.data))


@pytest.mark.parametrize("name", [
    "aiimpl_core-0.0.1-py3-none-any.whl",
    WHEEL.upper(),
    WHEEL + ".metadata",
    "aiimpl.db",
    "..%2Finstance%2Faiimpl.db",
    "../instance/aiimpl.db",
    f"x/{WHEEL}",
    "%00",
])
def test_any_other_file_name_is_404(client: Any, name: str) -> None:
    resp = client.get(f"/runner/session-package/{name}")
    assert resp.status_code == 404
    assert resp.get_json() == {"error": "package_not_found"}
    assert resp.headers["Cache-Control"] == "no-store"


def test_without_an_installed_distribution_every_name_is_404(
    client: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def not_installed() -> session_package.SessionPackage:
        raise ConfigError("the version of this orchestrator's aiimpl-core is not known (not installed)")

    monkeypatch.setattr(session_package, "current", not_installed)
    resp = client.get(f"/runner/session-package/{WHEEL}")
    assert resp.status_code == 404 and resp.get_json() == {"error": "package_not_found"}
    assert "cannot be served: the version of this orchestrator's aiimpl-core is not known" in caplog.text
    assert "Traceback" not in caplog.text


def test_the_route_is_described_in_the_openapi_document(client: Any) -> None:
    spec = client.get("/api/openapi.json").get_json()
    op = spec["paths"]["/runner/session-package/{filename}"]["get"]
    assert op["security"] == []
    assert op["parameters"] == [
        {"in": "path", "name": "filename", "required": True, "schema": {"type": "string"}}
    ]
    assert op["responses"]["200"]["content"] == {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
    }
    assert set(op["responses"]) == {"200", "304", "404"}
    assert op["responses"]["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CallbackError"
    }
