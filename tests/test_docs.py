"""Every hook is documented in docs/plugin-hooks.md with its exact signature."""
from __future__ import annotations

import inspect
import os

from aiimpl_core import hookspecs

DOCS = os.path.join(os.path.dirname(__file__), "..", "docs")


def _signature(fn) -> str:  # noqa: ANN001
    sig = str(inspect.signature(fn)).replace("'", "")
    return f"{fn.__name__}{sig}"


def test_every_hook_is_documented_with_its_signature():
    with open(os.path.join(DOCS, "plugin-hooks.md"), encoding="utf-8") as fh:
        text = fh.read()
    hooks = [
        fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("aiimpl_")
    ]
    assert len(hooks) >= 7
    for fn in hooks:
        assert f"### `{_signature(fn)}`" in text, f"{fn.__name__} is not documented as {_signature(fn)}"
        assert fn.__doc__ and ":param" in fn.__doc__, f"{fn.__name__} has no :param: docs"


def test_every_documented_hook_exists():
    import re

    with open(os.path.join(DOCS, "plugin-hooks.md"), encoding="utf-8") as fh:
        documented = set(re.findall(r"### `(aiimpl_\w+)\(", fh.read()))
    assert documented == {
        n for n, _ in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("aiimpl_")
    }


def test_generated_docs_are_current():
    """docs/api-reference.md, docs/configuration.md and the README's table match the code."""
    import subprocess
    import sys

    root = os.path.join(os.path.dirname(__file__), "..")
    out = subprocess.run([sys.executable, os.path.join(root, "scripts", "gen_docs.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
