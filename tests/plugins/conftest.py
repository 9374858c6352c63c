"""Installed plugin distributions, made up for a test: a ``.dist-info`` directory and its modules
in a temporary directory put on ``sys.path`` (for the test, and for a subprocess's PYTHONPATH)."""
from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest


class Site:
    """A directory of made-up distributions."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.modules: list[str] = []

    def add(
        self, dist: str, entry_points: dict[str, str], modules: dict[str, str], version: str = "1.0"
    ) -> None:
        """Install ``dist`` with ``entry_points`` (name -> module) in group ``aiimpl`` and ``modules``
        (name -> source)."""
        info = self.path / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[aiimpl]\n{lines}")
        for name, source in modules.items():
            (self.path / f"{name}.py").write_text(textwrap.dedent(source))
            self.modules.append(name)


@pytest.fixture
def dists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    made = Site(tmp_path / "site")
    made.path.mkdir()
    monkeypatch.syspath_prepend(str(made.path))
    yield made
    for name in made.modules:
        sys.modules.pop(name, None)


def backend_module(backend_id: str, body: str = "", *, hookimpl: bool = True) -> str:
    """A plugin module registering one runner backend ``backend_id``."""
    marker = "@hookimpl" if hookimpl else ""
    return f'''
from aiimpl_core import hookimpl
from aiimpl_core.providers import RunnerBackend


class Backend(RunnerBackend):
    id = {backend_id!r}
    display_name = "Backend {backend_id}"
{textwrap.indent(textwrap.dedent(body), "    ")}
    def dispatch(self, request):
        raise NotImplementedError

    def poll_runs(self, runs):
        return []


{marker}
def aiimpl_register_runner_backends(register):
    register(Backend)
'''
