"""The plugins shipped with the project use only the core's public API (docs/plugin-hooks.md,
"What a plugin imports from the core"), as a third party's plugin must: what they need of the
core is offered to every plugin, and the core's own modules stay free to change."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: the public modules, each with its submodules
PUBLIC = (
    "aiimpl_core.providers",
    "aiimpl_core.types",
    "aiimpl_core.errors",
    "aiimpl_core.http",
    "aiimpl_core.session_package",
    "aiimpl_core.github",
    "aiimpl_core.auth",
    "aiimpl_core.webhooks",
    "aiimpl_core.testing",
)
#: names of the package itself
PUBLIC_TOP = {"hookimpl", "create_app", "__version__"}

SOURCES = sorted(
    path
    for package in [*ROOT.glob("plugins/*/aiimpl_*"), ROOT / "docs/examples/aiimpl_example_runner"]
    for path in package.rglob("*.py")
    if "tests" not in path.relative_to(package).parts
)


def _core_imports(path: Path) -> list[tuple[int, str, str]]:
    """``(line, module, name)`` of each import from ``aiimpl_core`` in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            if (node.module or "").startswith("aiimpl_core"):
                found += [(node.lineno, node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, "") for alias in node.names
                      if alias.name.startswith("aiimpl_core")]
    return found


def _public(module: str, name: str) -> bool:
    if module == "aiimpl_core":
        return name in PUBLIC_TOP or any(f"aiimpl_core.{name}" == public for public in PUBLIC)
    return any(module == public or module.startswith(public + ".") for public in PUBLIC)


def test_the_plugins_sources_are_found() -> None:
    packages = {path.relative_to(ROOT).parts[:2] for path in SOURCES}
    assert len(packages) == 6, packages  # the five plugins and the example runner


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_plugin_imports_only_the_cores_public_api(path: Path) -> None:
    private = [f"line {line}: {module}{'.' + name if name else ''}"
               for line, module, name in _core_imports(path) if not _public(module, name)]
    assert not private, f"{path.relative_to(ROOT)} imports the core's own modules: {private}"


def test_the_check_tells_a_private_import() -> None:
    assert not _public("aiimpl_core.services.dispatch", "run_cycle_for_issues")
    assert not _public("aiimpl_core.schemas.common", "read_json")
    assert not _public("aiimpl_core", "orm")
    assert _public("aiimpl_core", "hookimpl") and _public("aiimpl_core.providers.base", "config_error")
