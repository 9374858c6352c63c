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


# -- what the operator guide and the README tell an operator to run, set and call ------------------

OPERATOR_DOCS = (os.path.join(DOCS, "operator-guide.md"), os.path.join(DOCS, "..", "README.md"))


def _operator_text() -> str:
    text = ""
    for path in OPERATOR_DOCS:
        with open(path, encoding="utf-8") as fh:
            text += fh.read() + "\n"
    return text


def _invocations(text: str) -> list[list[str]]:
    """The words of each ``aiimpl …`` the text shows: in inline code (which may run over a line
    break) and on the lines of indented code blocks, up to a shell comment, ``&&`` or a quote."""
    import re

    text = re.sub(r"```.*?```", "", text, flags=re.S)  # (YAML and the like)
    spans = re.findall(r"``(.+?)``", text, flags=re.S)  # (those that show a backtick)
    spans += re.findall(r"`([^`]+)`", re.sub(r"``.+?``", " ", text, flags=re.S))
    # (`list|show|…|` may go on after a line break)
    spans = [re.sub(r"\|\s+", "|", " ".join(span.replace("`", " ").split())) for span in spans]
    spans += [line.split("#", 1)[0].strip() for line in text.splitlines() if line.startswith("    ")]
    found = []
    for span in spans:
        for part in [c for piece in span.split("&&") for c in re.split(r"(?<![\w-])aiimpl\s+", piece)[1:]]:
            words = []
            for word in part.replace("[", " ").replace("]", " ").split():
                if word[0] in "'\"{<" or "=" in word and not word.startswith("--"):
                    break
                words.append(word)
            if words:
                found.append(words)
    return found


def _command_tree(app) -> list:  # noqa: ANN001
    """The command line's groups: the core's, the app's (Flask-Migrate's `db`) and the plugins'."""
    import click

    from aiimpl_core.cli import cli, commands  # noqa: F401 - registers the command groups
    from aiimpl_core.plugins import Plugins

    plugins_own = click.Group("plugins")
    Plugins(strict=False).add_commands(plugins_own)
    return [cli, app.cli, plugins_own]


def _app(tmp_path):  # noqa: ANN001, ANN202
    from aiimpl_core import create_app

    return create_app({"AIIMPL_DATABASE_URL": f"sqlite:///{tmp_path}/a.db", "TESTING": True})


def test_every_command_and_option_the_operator_docs_name_exists(tmp_path):
    import click

    roots = _command_tree(_app(tmp_path))
    invocations = _invocations(_operator_text())
    assert len(invocations) > 30
    group_options = {opt: param for root in roots for param in root.params for opt in param.opts}
    for words in invocations:
        said = "aiimpl " + " ".join(words)
        while words and words[0].startswith("-"):  # the group's own (`aiimpl -e FILE config`)
            option = group_options.get(words[0].split("=")[0])
            assert option is not None, f"{said}: aiimpl has no option {words[0]}"
            words = words[1 if option.is_flag or "=" in words[0] else 2:]
        first = words[0].split("|")[0]
        command = next((root.commands[first] for root in roots if first in root.commands), None)
        assert command is not None, f"{said}: no command {first}"
        for n, word in enumerate(words[1:], 1):
            if word == "--":
                break  # (what follows is arguments, `aiimpl db downgrade -- -2`)
            if word.startswith("-"):
                options = {opt for param in command.params for opt in param.opts} | {"--help"}
                assert word.split("=")[0] in options, f"{said}: {command.name} has no option {word}"
            elif isinstance(command, click.Group) and word.islower():
                names = [name for name in word.split("|") if name]
                for name in names:
                    assert name in command.commands, f"{said}: {command.name} has no command {name}"
                if len(names) > 1:
                    break  # (a list of subcommands: what follows is not one command's)
                command = command.commands[names[0]]
            elif n == 1 and not isinstance(command, click.Group) and "|" in word:
                # `aiimpl jobs list|show|cancel` after a first word that is a command
                raise AssertionError(f"{said}: {command.name} has no subcommands")


def test_every_variable_the_operator_guide_names_is_read():
    """A core or plugin setting, or one the gunicorn configuration, the app or the test runner reads."""
    import re

    from aiimpl_core.config import SETTINGS
    from aiimpl_core.plugins import Plugins

    known = {s.name for s in SETTINGS} | {v.name for _, v in Plugins(strict=False).config_vars()}
    root = os.path.join(DOCS, "..")
    for source in ("aiimpl_core/gunicorn_conf.py", "aiimpl_core/app.py", "scripts/test.sh", ".ci/run"):
        with open(os.path.join(root, source), encoding="utf-8") as fh:
            known |= set(re.findall(r"\b(?:AIIMPL|RUNNER)_[A-Z_]+\b", fh.read()))
    named = set(re.findall(r"\b(?:AIIMPL_[A-Z_]*[A-Z]|RUNNER_MODE)\b", _operator_text()))
    assert len(named) > 30
    assert sorted(named - known) == []


def test_every_endpoint_the_operator_guide_names_is_served(tmp_path):
    import re

    app = _app(tmp_path)
    rules = {(method, re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
             for rule in app.url_map.iter_rules() for method in rule.methods or ()}
    with open(OPERATOR_DOCS[0], encoding="utf-8") as fh:
        named = set(re.findall(r"\b(GET|POST|PATCH|PUT|DELETE) (/[\w/{}.-]*\w[}]?)", fh.read()))
    assert len(named) > 10
    assert sorted(named - rules) == []


def test_the_author_guide_lists_every_field_and_value_of_the_backends_types():
    """A plugin author found the fields of ``DispatchRequest``, ``RunState`` … and the values of
    ``TimeoutReason`` and ``LogLabel`` only by reading the source."""
    import dataclasses
    import re

    from aiimpl_core import types

    with open(os.path.join(DOCS, "plugin-author-guide.md"), encoding="utf-8") as fh:
        guide = fh.read()
    section = guide[guide.index("### The types"):guide.index("## 3. The hook")]
    named = set(re.findall(r"`([^`]+)`", section))
    for cls in (types.DispatchRequest, types.DispatchResult, types.InFlightRun, types.RunState,
                types.MappingView, types.SessionInfo, types.SyncResult, types.CheckResult):
        assert f"**`{cls.__name__}`**" in section, cls.__name__
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in named]
        assert not missing, f"{cls.__name__}: {missing}"
    for enum in (types.Phase, types.RunPhase, types.TimeoutReason, types.LogLabel):
        missing = [member.value for member in enum if member.value not in named]
        assert not missing, f"{enum.__name__}: {missing}"


def _python_blocks(name: str) -> list[tuple[int, str]]:
    """The guide's ```python blocks, each with the line it starts on."""
    with open(os.path.join(DOCS, name), encoding="utf-8") as f:
        lines = f.read().splitlines()
    blocks, start = [], None
    for number, line in enumerate(lines, 1):
        if start is None and line == "```python":
            start = number
        elif start is not None and line == "```":
            blocks.append((start, "\n".join(lines[start:number - 1]) + "\n"))
            start = None
    return blocks


def test_the_author_guides_whole_modules_use_only_names_they_import():
    """A block that starts with its imports is a module an author copies: a name it uses and never
    imports (``@pytest.fixture`` without ``import pytest``) fails at collection. Blocks that start
    otherwise are excerpts of a module shown elsewhere."""
    import subprocess
    import sys

    modules = [(start, code) for start, code in _python_blocks("plugin-author-guide.md")
               if code.startswith(("import ", "from "))]
    assert len(modules) >= 4, modules  # the plugin, the contract test, the two orchestrator tests
    for start, code in modules:
        done = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated", "--select", "F821",
             "--output-format", "concise", "--stdin-filename", f"guide_line_{start}.py", "-"],
            input=code, capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, f"plugin-author-guide.md, the block at line {start}:\n{done.stdout}"
