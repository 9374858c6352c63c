"""The plugins shipped with the project use only the core's public API (docs/plugin-hooks.md,
"What a plugin imports from the core"), as a third party's plugin must: what they need of the
core is offered to every plugin, and the core's own modules stay free to change. The check is the
kit's (:mod:`aiimpl_core.testing.imports`), which a third party runs on its own package."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aiimpl_core.testing.imports import (
    PUBLIC_MODULES,
    PUBLIC_NAMES,
    assert_public_core_api,
    is_public,
    private_uses,
    sources_of,
)

ROOT = Path(__file__).resolve().parent.parent

PACKAGES = sorted([*ROOT.glob("plugins/*/aiimpl_*"), ROOT / "docs/examples/aiimpl_example_runner"])
SOURCES = sorted(path for package in PACKAGES for path in sources_of(package))


def test_the_plugins_sources_are_found() -> None:
    packages = {path.relative_to(ROOT).parts[:2] for path in SOURCES}
    assert len(packages) == 6, packages  # the five plugins and the example runner


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_plugin_imports_only_the_cores_public_api(path: Path) -> None:
    uses = private_uses(path.read_text(encoding="utf-8"), str(path))
    private = [f"line {line}: {what}" for line, what in uses]
    assert not private, f"{path.relative_to(ROOT)} uses the core's own modules: {private}"


def test_the_check_tells_a_private_import() -> None:
    assert not is_public("aiimpl_core.services.dispatch", "run_cycle_for_issues")
    assert not is_public("aiimpl_core.schemas.common", "read_json")
    assert not is_public("aiimpl_core", "orm")
    assert is_public("aiimpl_core", "hookimpl") and is_public("aiimpl_core.providers.base", "config_error")
    assert is_public("aiimpl_core") and is_public("requests", "Session")


def test_the_check_takes_the_package_itself_as_public() -> None:
    """docs/plugin-hooks.md writes the marker as ``@aiimpl_core.hookimpl``."""
    source = """
import aiimpl_core
import aiimpl_core as core
import aiimpl_core.testing as kit

@aiimpl_core.hookimpl
def aiimpl_register_runner_backends(register):
    register(core.providers.RunnerBackend, aiimpl_core.__version__, aiimpl_core.__file__, kit.contract)
"""
    assert private_uses(source) == []


def test_the_check_tells_a_private_module_reached_otherwise_than_by_an_import_statement() -> None:
    source = """
import importlib
from importlib import import_module
import aiimpl_core
import aiimpl_core.providers
import aiimpl_core as core

importlib.import_module("aiimpl_core.services.dispatch")
import_module(".orm", "aiimpl_core")
__import__("aiimpl_core.schemas")
__import__("aiimpl_core", fromlist=["config", "hookimpl"])
aiimpl_core.orm.Job
core.services
getattr(aiimpl_core, "plugins")
importlib.import_module("aiimpl_core.testing.contract")
import_module(".errors", "aiimpl_core")
aiimpl_core.providers.base
importlib.import_module(name)
"""
    assert private_uses(source) == [
        (8, "aiimpl_core.services.dispatch"),
        (9, "aiimpl_core.orm"),
        (10, "aiimpl_core.schemas"),
        (11, "aiimpl_core.config"),
        (12, "aiimpl_core.orm"),
        (13, "aiimpl_core.services"),
        (14, "aiimpl_core.plugins"),
    ]


def test_the_kit_check_names_each_private_use_of_a_package(tmp_path: Path) -> None:
    package = tmp_path / "aiimpl_acme"
    (package / "tests").mkdir(parents=True)
    (package / "__init__.py").write_text("import aiimpl_core\n\nJOB = aiimpl_core.orm.Job\n")
    # not checked, as the first-party plugins' tests are not: a test may look into the core
    (package / "tests" / "test_it.py").write_text("from aiimpl_core.orm import Job\n")

    said = re.escape(f"{package / '__init__.py'}:3: aiimpl_core.orm")
    with pytest.raises(AssertionError, match=said) as err:
        assert_public_core_api(package)
    assert "test_it.py" not in str(err.value)
    assert_public_core_api("aiimpl_linear")  # by its importable name


def test_the_public_modules_are_those_the_hooks_reference_lists() -> None:
    section = (ROOT / "docs/plugin-hooks.md").read_text(encoding="utf-8").split(
        "## What a plugin imports from the core", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(aiimpl_core[\w.]*)`", section, flags=re.MULTILINE))
    assert listed == {"aiimpl_core", *PUBLIC_MODULES}
    top = section.split("| `aiimpl_core` |", 1)[1].split("\n", 1)[0]
    assert set(re.findall(r"`(\w+)`", top)) == PUBLIC_NAMES
