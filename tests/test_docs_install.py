"""The docs install the project's own distributions from the repository, by path.

None of them is on a package index: `pip install aiimpl-core` there would fail, or install whatever
someone else published under that name.
"""
from __future__ import annotations

import glob
import os
import re
import shlex
import tomllib

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _hand_written_docs() -> list[str]:
    generated = {"api-reference.md", "configuration.md"}
    return [
        os.path.join(ROOT, "README.md"),
        *(p for p in sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
          if os.path.basename(p) not in generated),
        *sorted(glob.glob(os.path.join(ROOT, "plugins", "*", "README.md"))),
        *sorted(glob.glob(os.path.join(ROOT, "docs", "examples", "*", "README.md"))),
    ]


def _own_distributions() -> set[str]:
    names = set()
    for path in [os.path.join(ROOT, "pyproject.toml"),
                 *glob.glob(os.path.join(ROOT, "plugins", "*", "pyproject.toml")),
                 *glob.glob(os.path.join(ROOT, "docs", "examples", "*", "pyproject.toml"))]:
        with open(path, "rb") as fh:
            names.add(tomllib.load(fh)["project"]["name"])
    return names


def _pip_install_arguments(text: str) -> list[str]:
    args = []
    for command in re.findall(r"pip install ([^\n`#]+)", text):
        for word in shlex.split(command.replace("&&", " ; ").split(";")[0]):
            if not word.startswith("-"):
                args.append(word)
    return args


def test_the_project_s_distributions_are_installed_by_path():
    own = _own_distributions()
    assert {"aiimpl-core", "aiimpl-linear", "aiimpl-gha"} <= own
    seen = 0
    for path in _hand_written_docs():
        with open(path, encoding="utf-8") as fh:
            for arg in _pip_install_arguments(fh.read()):
                seen += 1
                name = re.split(r"[\[<>=!~ ]", arg, maxsplit=1)[0]
                where = os.path.relpath(path, ROOT)
                assert name not in own, f"{where}: pip install {arg} (install it by path)"
    assert seen > 5


def _core_path(arg: str) -> bool:
    return arg == "." or arg.startswith(".[")


def test_a_plugin_is_installed_with_the_core_or_where_it_is():
    """``pip install ./plugins/aiimpl_fly`` into an environment without the core has pip look
    ``aiimpl-core`` up on the package index (where it is not published): each command that installs
    one of the project's plugins by path installs the core beside it, or says it goes where the core
    is installed."""
    plugin_dirs = ("plugins/", "docs/examples/")
    seen = 0
    for path in _hand_written_docs():
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        for match in re.finditer(r"pip install ([^\n`#]+)", text):
            words = [w for w in shlex.split(match.group(1)) if not w.startswith("-")]
            if not any(w.lstrip("./").startswith(plugin_dirs) for w in words):
                continue
            seen += 1
            after = " ".join(text[match.end():match.end() + 80].split())
            where = os.path.relpath(path, ROOT)
            assert any(_core_path(w) for w in words) or "where the core is installed" in after, (
                f"{where}: pip install {match.group(1).strip()} (install the core beside it, or say it "
                "goes where the core is installed)")
    assert seen >= 5
