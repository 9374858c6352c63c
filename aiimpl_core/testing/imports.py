"""Whether a plugin uses only the core's public API (docs/plugin-hooks.md, "What a plugin imports
from the core"): everything else of ``aiimpl_core`` is the core's own and may change.

The check reads the source, it imports nothing: ``import`` and ``from … import`` statements,
``importlib.import_module("…")`` and ``__import__("…")`` with a literal name, and attributes of
the package itself (``aiimpl_core.orm`` after ``import aiimpl_core``, ``getattr(aiimpl_core,
"orm")``). A name built at run time is not seen. In a plugin's test suite::

    from aiimpl_core.testing.imports import assert_public_core_api

    def test_the_plugin_uses_only_the_cores_public_api():
        assert_public_core_api("aiimpl_my_tracker")
"""
from __future__ import annotations

import ast
import importlib.util
from collections.abc import Callable, Iterable
from pathlib import Path

#: the public modules, each with its submodules
PUBLIC_MODULES = (
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
PUBLIC_NAMES = frozenset({"hookimpl", "create_app", "__version__"})

CORE = "aiimpl_core"
_IMPORT_FUNCTIONS = frozenset({"import_module", "__import__"})


def is_public(module: str, name: str = "") -> bool:
    """Whether ``from module import name`` (``import module`` without ``name``) takes only the
    core's public API; a module outside ``aiimpl_core`` is not the core's business."""
    if module != CORE and not module.startswith(CORE + "."):
        return True
    if module == CORE:
        dunder = name.startswith("__") and name.endswith("__")  # __file__ is none of its modules
        return not name or dunder or name in PUBLIC_NAMES or _is_public_module(f"{CORE}.{name}")
    return _is_public_module(module)


def _is_public_module(module: str) -> bool:
    return any(module == public or module.startswith(public + ".") for public in PUBLIC_MODULES)


def private_uses(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """``(line, what)`` of each use of the core's own modules in Python ``source``, ``what`` the
    dotted name it reaches (``aiimpl_core.orm``)."""
    tree = ast.parse(source, filename)
    # the names the package itself is bound to: `import aiimpl_core` (or `aiimpl_core.x`, which
    # binds `aiimpl_core` too) and `import aiimpl_core as core`
    package_names = {
        alias.asname or CORE
        for node in ast.walk(tree) if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name == CORE or (alias.asname is None and alias.name.startswith(CORE + "."))
    }
    found: list[tuple[int, str]] = []

    def use(line: int, module: str, name: str = "") -> None:
        if not is_public(module, name):
            found.append((line, f"{module}.{name}" if name else module))

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                use(node.lineno, node.module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                use(node.lineno, alias.name)
        elif isinstance(node, ast.Attribute) and _names(node.value, package_names):
            use(node.lineno, CORE, node.attr)
        elif isinstance(node, ast.Call):
            _call(node, package_names, use)
    return sorted(set(found))


def _call(node: ast.Call, package_names: set[str], use: Callable[..., None]) -> None:
    """The uses in a call of ``import_module``, ``__import__`` or ``getattr`` on the package."""
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    args = {**dict(enumerate(node.args)), **{kw.arg: kw.value for kw in node.keywords if kw.arg}}
    if called == "getattr" and len(node.args) >= 2 and _names(node.args[0], package_names):
        name = _literal(node.args[1])
        if name is not None:
            use(node.lineno, CORE, name)
        return
    if called not in _IMPORT_FUNCTIONS:
        return
    module = _literal(args.get(0, args.get("name")))
    if module is None:
        return
    if called == "import_module" and module.startswith("."):
        package = _literal(args.get(1, args.get("package")))
        if package is None:
            return
        try:
            module = importlib.util.resolve_name(module, package)
        except (ImportError, ValueError):
            return
    use(node.lineno, module)
    fromlist = args.get(3, args.get("fromlist")) if called == "__import__" else None
    if isinstance(fromlist, (ast.List, ast.Tuple)):
        for item in fromlist.elts:
            name = _literal(item)
            if name is not None:
                use(node.lineno, module, name)


def _names(node: ast.expr, package_names: set[str]) -> bool:
    return isinstance(node, ast.Name) and node.id in package_names


def _literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def sources_of(package: str | Path) -> list[Path]:
    """The ``.py`` files of ``package`` (an importable name, or a directory as a ``Path``),
    outside its ``tests`` folders."""
    if isinstance(package, str):
        spec = importlib.util.find_spec(package)
        if spec is None or not (spec.submodule_search_locations or spec.origin):
            raise ValueError(f"no package or module {package!r} is importable")
        locations = list(spec.submodule_search_locations or ())
        roots = [Path(p) for p in locations] if locations else [Path(str(spec.origin))]
    else:
        roots = [Path(package)]
    return sorted(
        path for root in roots
        for path in ([root] if root.is_file() else root.rglob("*.py"))
        if "tests" not in path.relative_to(root).parts
    )


def private_uses_in(paths: Iterable[Path]) -> list[str]:
    """``path:line: name`` of each use of the core's own modules in the files ``paths``."""
    return [f"{path}:{line}: {what}"
            for path in paths
            for line, what in private_uses(path.read_text(encoding="utf-8"), str(path))]


def assert_public_core_api(package: str | Path) -> None:
    """Fail when ``package`` (an importable name, or a directory as a ``Path``) uses a module of the core that
    is not public, naming each use."""
    paths = sources_of(package)
    assert paths, f"{package}: no Python file found"
    private = private_uses_in(paths)
    assert not private, (
        f"{package} uses the core's own modules, which may change in any release (the public ones are "
        "listed in docs/plugin-hooks.md, 'What a plugin imports from the core'): " + "; ".join(private)
    )
