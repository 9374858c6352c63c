"""The session program as a wheel this orchestrator serves itself (``GET /runner/session-package/<file>``).

AI-Implement is not published on a package index, and a name looked up on one could find someone
else's distribution, so a runner that installs the session program with pip gets it from the
orchestrator it reports to: a wheel of the running ``aiimpl-core``, built once per process from
the files of the ``aiimpl_core`` package directory (not from a source tree, a build tool or the
network) and the installed distribution's metadata and the license files it names.

The wheel holds the program only. Of the package directory it takes regular files and nothing
else: no ``__pycache__`` or ``*.pyc``, no hidden file or folder (``.env``), no symbolic link (it
could point anywhere), no SQLite database (by name or by its first bytes) and nothing under the
instance folder (``AIIMPL_INSTANCE_PATH``) should it lie inside the package directory. The
endpoint is public: the program is open source and the wheel holds no secret.

The bytes depend only on the files (entries sorted, time stamps fixed), so every process of one
deployment serves the same wheel, and its sha256 (which the GitHub Actions workflows pin) is the
same in all of them.

A deploy that changes the files serves another wheel, while the workflows synced before it still
pin the old one. So every wheel a workflow is synced to pin is kept: :func:`pin` stores its bytes
in the database (``session_packages``, once per sha256), and the wheel is served by its hash at
``<URL_PATH><sha256>/<file name>`` (:func:`find`) whichever wheel the orchestrator runs, until the
housekeeping removes it long after its last pin.
"""

from __future__ import annotations

import base64
import csv
import email.parser
import hashlib
import importlib.metadata
import io
import logging
import os
import re
import stat
import threading
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath

from .errors import ConfigError

log = logging.getLogger(__name__)

#: the distribution whose program the wheel holds, and its import package
DISTRIBUTION = "aiimpl-core"
PACKAGE = "aiimpl_core"
#: pure Python, any Python 3 (``requires-python`` in the metadata says which)
TAG = "py3-none-any"
#: every entry's time stamp: the earliest a zip file can hold, so that the same files give the same bytes
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
#: the first bytes of every SQLite database, whatever its name
SQLITE_HEADER = b"SQLite format 3\x00"
#: names a database or its journal ends with
DATABASE_SUFFIXES = (".db", ".sqlite", ".sqlite3", "-journal", "-wal", "-shm")
#: the path wheels are served under (the routes of :mod:`aiimpl_core.api.session_package`): a wheel by
#: its hash at ``<URL_PATH><sha256>/<file name>`` (:attr:`Pin.path`), the running one also at
#: ``<URL_PATH><file name>`` (for a URL set by hand)
URL_PATH = "/runner/session-package/"
#: a wheel's sha256 as a path names it: hex, lower case
SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class SessionPackage:
    """A wheel of the session program: its file name, its bytes and their sha256 (hex)."""

    filename: str
    data: bytes
    sha256: str


def wheel_name_part(name: str) -> str:
    """A distribution name as a wheel's file name writes it: ``aiimpl-core`` → ``aiimpl_core``."""
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_version_part(version: str) -> str:
    """A version as a wheel's file name writes it: normalised (PEP 440) where :mod:`packaging` is
    installed, a ``-`` written ``_``. A local version stays: ``0.1.dev3+gabc`` is valid there."""
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:  # (not a dependency of the core: the installed version is normalised already)
        normalised = version
    else:
        try:
            normalised = str(Version(version))
        except InvalidVersion:
            normalised = version
    return normalised.replace("-", "_")


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode("ascii")


def _is_database(path: Path) -> bool:
    if path.name.lower().endswith(DATABASE_SUFFIXES):
        return True
    try:
        with path.open("rb") as fh:
            return fh.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return True  # not readable: left out all the same


def package_files(package_dir: Path, *, exclude: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
    """The files of a package directory the wheel takes, sorted by their path inside it.

    :param exclude: folders left out with everything under them (the instance folder).
    """
    root = Path(package_dir)
    left_out = [Path(os.path.realpath(p)) for p in exclude if str(p)]
    found: list[Path] = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        here = Path(folder)
        # (os.walk does not descend into a linked folder, but lists it among the folders: dropped)
        dirs[:] = sorted(
            d for d in dirs
            if d != "__pycache__" and not d.startswith(".") and not (here / d).is_symlink()
            and Path(os.path.realpath(here / d)) not in left_out
        )
        for name in sorted(files):
            path = here / name
            if name.startswith(".") or name.endswith((".pyc", ".pyo")):
                continue
            try:
                mode = path.lstat().st_mode
            except OSError:
                continue
            if not stat.S_ISREG(mode) or _is_database(path):
                continue
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def build(
    package_dir: Path,
    *,
    name: str,
    version: str,
    metadata: str,
    entry_points: str | None = None,
    licenses: Mapping[str, bytes] | None = None,
    exclude: Iterable[str | os.PathLike[str]] = (),
) -> SessionPackage:
    """A wheel of a package directory with the given metadata (the bytes depend on the files only).

    :param package_dir: the import package's folder; its files are written under its own name.
    :param metadata: the distribution's core metadata (``METADATA``).
    :param entry_points: its ``entry_points.txt`` (the ``aiimpl`` console script), if any.
    :param licenses: the license files its metadata names (``License-File``), by that name; written
        under ``.dist-info/licenses/``.
    :param exclude: folders left out (:func:`package_files`).
    """
    package_dir = Path(package_dir)
    stem = f"{wheel_name_part(name)}-{wheel_version_part(version)}"
    dist_info = f"{stem}.dist-info"
    entries: list[tuple[str, bytes, int]] = []  # (path in the archive, bytes, permission bits)
    for path in package_files(package_dir, exclude=exclude):
        mode = 0o755 if path.stat().st_mode & stat.S_IXUSR else 0o644
        arcname = f"{package_dir.name}/{path.relative_to(package_dir).as_posix()}"
        entries.append((arcname, path.read_bytes(), mode))
    wheel = ("Wheel-Version: 1.0\n"
             f"Generator: {DISTRIBUTION} (session package)\n"
             "Root-Is-Purelib: true\n"
             f"Tag: {TAG}\n")
    entries.append((f"{dist_info}/METADATA", metadata.encode("utf-8"), 0o644))
    entries.append((f"{dist_info}/WHEEL", wheel.encode("utf-8"), 0o644))
    if entry_points:
        entries.append((f"{dist_info}/entry_points.txt", entry_points.encode("utf-8"), 0o644))
    for license_name, data in sorted((licenses or {}).items()):
        entries.append((f"{dist_info}/licenses/{license_name}", data, 0o644))
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for arcname, data, _ in entries:
        writer.writerow((arcname, _record_hash(data), len(data)))
    writer.writerow((f"{dist_info}/RECORD", "", ""))  # a file cannot hold its own hash
    entries.append((f"{dist_info}/RECORD", record.getvalue().encode("utf-8"), 0o644))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        # the package's files first, the .dist-info last and RECORD at the very end, as the format
        # recommends
        for arcname, data, mode in entries:
            info = zipfile.ZipInfo(arcname, date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, so that the permission bits below are read as such
            info.external_attr = (stat.S_IFREG | mode) << 16
            archive.writestr(info, data)
    data = out.getvalue()
    return SessionPackage(f"{stem}-{TAG}.whl", data, hashlib.sha256(data).hexdigest())


def _entries(dist: importlib.metadata.Distribution) -> Iterator[tuple[str, str | None]]:
    # an egg-info (a source checkout installed in development mode) holds PKG-INFO: the same fields
    yield "METADATA", dist.read_text("METADATA") or dist.read_text("PKG-INFO")
    yield "entry_points.txt", dist.read_text("entry_points.txt")


def _license_files(dist: importlib.metadata.Distribution, metadata: str) -> dict[str, bytes]:
    """The license files the metadata names (``License-File``), as the installed distribution
    holds them: an installed wheel under ``.dist-info/licenses/``, a source checkout's egg-info
    (installed in development mode) beside itself, in the project's folder."""
    found = {}
    egg_info = dist.read_text("METADATA") is None  # (its fields are in PKG-INFO)
    for name in email.parser.HeaderParser().parsestr(metadata).get_all("License-File") or ():
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts:
            continue
        text = dist.read_text(f"licenses/{path}")
        if text is None and egg_info:
            beside = Path(str(dist.locate_file(str(path))))
            text = beside.read_text(encoding="utf-8") if beside.is_file() else None
        if text is not None:
            found[path.as_posix()] = text.encode("utf-8")
    return found


def build_running() -> SessionPackage:
    """A wheel of the running ``aiimpl-core`` (built anew; :func:`current` keeps one per process).

    :raises ConfigError: when the distribution's metadata is not installed (run from a source tree).
    """
    import aiimpl_core

    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    found = dict(_entries(dist)) if dist is not None else {}
    if dist is None or not found.get("METADATA"):
        raise ConfigError(f"the version of this orchestrator's {DISTRIBUTION} is not known (not installed)")
    instance = os.environ.get("AIIMPL_INSTANCE_PATH")
    return build(
        Path(aiimpl_core.__file__).parent,
        name=DISTRIBUTION,
        version=dist.version,
        metadata=str(found["METADATA"]),
        entry_points=found.get("entry_points.txt"),
        licenses=_license_files(dist, str(found["METADATA"])),
        exclude=[instance] if instance else (),
    )


_lock = threading.Lock()
_current: SessionPackage | None = None


def current() -> SessionPackage:
    """The wheel of the running ``aiimpl-core``, built on first use and kept for the process.

    :raises ConfigError: as :func:`build_running` (not kept: asked again next time).
    """
    global _current
    package = _current
    if package is None:
        with _lock:
            if _current is None:
                _current = build_running()
            package = _current
    return package


# -- the wheels the workflows pin --------------------------------------------------------------


@dataclass(frozen=True)
class Pin:
    """What a requirement pinning a served wheel names: the wheel's file name and sha256."""

    filename: str
    sha256: str

    @property
    def path(self) -> str:
        """The path the wheel is served at under the orchestrator's public URL, whichever wheel
        the orchestrator runs: ``/runner/session-package/<sha256>/<file name>``."""
        return f"{URL_PATH}{self.sha256}/{self.filename}"

    def url(self, base_url: str) -> str:
        """The wheel's URL under ``base_url``, with its hash for pip to check:
        ``<base URL><path>#sha256=<hash>``."""
        return f"{base_url.rstrip('/')}{self.path}#sha256={self.sha256}"


def pin(package: SessionPackage | None = None, *, now: datetime | None = None) -> Pin:
    """Keep a wheel served by its hash for the workflows that pin it: its bytes stored in the
    database (once per sha256, whoever stores it at the same time), and when it was last pinned
    moved to ``now``. The GitHub Actions backend calls it as a sync writes the workflows that pin
    the wheel (or finds them current), and as ``aiimpl check`` finds them current; the housekeeping
    removes a wheel no one pinned for a long time (:mod:`aiimpl_core.services.housekeeping`).

    Outside an application context there is no database (a backend used on its own, as in a
    plugin's unit tests): nothing is stored, and only the running wheel is served.

    :param package: the wheel (default: :func:`current`, the running one).
    :returns: what the requirement names: :attr:`Pin.path`, :meth:`Pin.url`.
    :raises ConfigError: as :func:`current`.
    """
    package = package or current()
    from flask import has_app_context

    if has_app_context():
        _store(package, now)
    return Pin(package.filename, package.sha256)


def _store(package: SessionPackage, now: datetime | None) -> None:
    from sqlalchemy import update

    from .database import serialized, upsert
    from .orm import StoredSessionPackage, utcnow

    now = now or utcnow()
    table = StoredSessionPackage
    with serialized(writes_first=True) as session:
        # (the bytes travel only with the first pin of a wheel: the later ones move the time)
        moved = session.execute(
            update(table).where(table.sha256 == package.sha256).values(last_pinned_at=now),
            execution_options={"synchronize_session": False},
        )
        if moved.rowcount:
            return
        # another process may store the same wheel at the same moment: one row, neither fails
        insert = upsert(table, session).values(sha256=package.sha256, filename=package.filename,
                                               data=package.data, created_at=now, last_pinned_at=now)
        session.execute(insert.on_conflict_do_update(index_elements=[table.sha256],
                                                     set_={"last_pinned_at": insert.excluded.last_pinned_at}))


def stored(sha256: str, filename: str) -> SessionPackage | None:
    """The stored wheel of this sha256 and file name (:func:`pin`); ``None`` when there is none, or
    no database (outside an application context)."""
    from flask import has_app_context

    if not has_app_context() or not SHA256_RE.fullmatch(sha256):
        return None
    from sqlalchemy import select

    from .extensions import db
    from .orm import StoredSessionPackage as table

    data = db.session.scalar(select(table.data).where(table.sha256 == sha256, table.filename == filename))
    return None if data is None else SessionPackage(filename, bytes(data), sha256)


def running() -> SessionPackage | None:
    """:func:`current`, or ``None`` (logged) when it cannot be built (no installed distribution)."""
    try:
        return current()
    except ConfigError as exc:
        log.warning("the session package cannot be served: %s", exc.message)
        return None


def find(path: str) -> SessionPackage | None:
    """The wheel served at ``URL_PATH + path``; ``None`` when none is.

    ``<sha256>/<file name>``: the running wheel, or a stored one (:func:`stored`), with that hash
    and name. ``<file name>`` alone (a URL set by hand): the running wheel only, whatever bytes
    it holds.
    """
    now_running = running()
    if "/" not in path:
        return now_running if now_running is not None and path == now_running.filename else None
    sha256, _, filename = path.partition("/")
    if not SHA256_RE.fullmatch(sha256) or not filename or "/" in filename:
        return None
    if now_running is not None and (now_running.sha256, now_running.filename) == (sha256, filename):
        return now_running
    return stored(sha256, filename)
