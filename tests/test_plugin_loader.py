"""The plugin loader's treatment of a plugin it refuses, of two plugins claiming one id, of hook
tracing, and of a provider that cannot be set up.

A plugin marked failed contributes nothing (no provider of any kind, no command, no blueprint, no
event hook), whenever it is refused; the plugin registered later loses a collision, so a built-in
keeps its id; ``AIIMPL_TRACE_PLUGINS`` logs the hook calls the core makes; a tracker whose
constructor fails is left out of the live listing as a runner backend is.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
from flask import Blueprint

from aiimpl_core import hookimpl
from aiimpl_core.errors import DuplicateProviderError, NotFound
from aiimpl_core.plugins import Plugins
from aiimpl_core.providers import ModelProvider
from aiimpl_core.testing.contract import make_context
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker


class Contributor:
    """A plugin with a tracker, a command, a blueprint and an event hook; ``broken`` names the hook
    that raises (after doing its part, for the command and blueprint hooks)."""

    def __init__(self, name: str, broken: str | None = None, *, runner: type | None = None) -> None:
        self.__name__ = name
        self.broken = broken
        self.runner = runner
        self.tracker = FakeTracker(f"{name}-tracker")
        self.events: list[tuple[int, str]] = []
        self.blueprint = Blueprint(f"{name}-bp", __name__)

    def _maybe_raise(self, hook: str) -> None:
        if self.broken == hook:
            raise RuntimeError(f"boom in {hook}")

    @hookimpl
    def aiimpl_register_ticketing_providers(self, register: Callable[..., None]) -> None:
        register(self.tracker.provider_class)
        self._maybe_raise("aiimpl_register_ticketing_providers")

    @hookimpl
    def aiimpl_register_runner_backends(self, register: Callable[..., None]) -> None:
        self._maybe_raise("aiimpl_register_runner_backends")
        if self.runner is not None:
            register(self.runner)

    @hookimpl
    def aiimpl_register_commands(self, cli: click.Group) -> None:
        cli.add_command(click.Command(f"{self.__name__}-hello", callback=lambda: None))
        self._maybe_raise("aiimpl_register_commands")

    @hookimpl
    def aiimpl_register_blueprints(self, register: Callable[..., None]) -> None:
        register(self.blueprint, url_prefix=f"/{self.__name__}")
        self._maybe_raise("aiimpl_register_blueprints")

    @hookimpl
    def aiimpl_job_status_changed(self, job_id: int, new: str) -> None:
        self.events.append((job_id, new))


def _contributes_nothing(facade: Plugins, plugin: Contributor) -> None:
    name = plugin.__name__
    rec = facade.records[name]
    assert rec.status == "failed" and rec.provides == []
    assert f"{name}-tracker" not in facade.ids("ticketing")
    assert facade.owner("ticketing", f"{name}-tracker") is None
    with pytest.raises(NotFound):
        facade.ticketing(f"{name}-tracker")
    cli = click.Group("aiimpl")
    facade.add_commands(cli)
    assert f"{name}-hello" not in cli.commands
    assert plugin.blueprint not in [bp for _name, bp, _options in facade.blueprints()]
    facade.job_status_changed(7, "ENG-1", None, "dispatched")
    assert plugin.events == []
    row = {r["name"]: r for r in facade.listing()}[name]
    assert (row["status"], row["provides"]) == ("failed", [])


# -- a failed plugin contributes nothing ------------------------------------------------------


def test_a_plugin_whose_registration_hook_raises_contributes_nothing():
    good = Contributor("good")
    broken = Contributor("broken", "aiimpl_register_runner_backends")

    facade = Plugins(load_entrypoints=False, extra=[good, broken])

    assert facade.failures() == {
        "broken": f"aiimpl_register_runner_backends failed: RuntimeError: boom in "
                  f"aiimpl_register_runner_backends ({__file__}:{_line_of('raise RuntimeError')})"
    }
    _contributes_nothing(facade, broken)
    assert facade.ids("ticketing") == ["good-tracker"]
    cli = click.Group("aiimpl")
    facade.add_commands(cli)
    assert list(cli.commands) == ["good-hello"]
    assert good.events == [(7, "dispatched")]  # the event _contributes_nothing sent


def _line_of(text: str) -> int:
    return next(n for n, line in enumerate(Path(__file__).read_text().splitlines(), 1) if text in line)


def test_a_plugin_refused_for_a_runner_mode_collision_loses_its_tracker_too():
    refused = Contributor("refused", runner=FakeRunner("b1", "gha").backend_class)

    facade = Plugins(load_entrypoints=False, extra=[FakeRunner("a1", "gha").plugin, refused], strict=False)

    [conflict] = facade.conflicts
    assert conflict == ("runner mode 'gha' is claimed by backend 'a1' (plugin fake-runner-a1) and backend "
                        "'b1' (plugin refused)")
    assert facade.records["refused"].error == conflict
    _contributes_nothing(facade, refused)


def test_a_plugin_whose_blueprint_hook_raises_loses_what_it_registered_before():
    broken = Contributor("broken", "aiimpl_register_blueprints")
    facade = Plugins(load_entrypoints=False, extra=[Contributor("good"), broken])
    assert "broken-tracker" in facade.ids("ticketing")  # not refused yet

    found = facade.blueprints()

    assert [bp.name for _name, bp, _options in found] == ["good-bp"]
    assert facade.records["broken"].error.startswith(
        "aiimpl_register_blueprints failed: RuntimeError: boom in aiimpl_register_blueprints")
    _contributes_nothing(facade, broken)


def test_a_plugin_whose_command_hook_raises_loses_its_command_and_its_providers():
    good, broken = Contributor("good"), Contributor("broken", "aiimpl_register_commands")
    facade = Plugins(load_entrypoints=False, extra=[good, broken])
    cli = click.Group("aiimpl")

    facade.add_commands(cli)

    assert list(cli.commands) == ["good-hello"]  # the command added before the hook raised is gone
    assert facade.records["broken"].error.startswith(
        "aiimpl_register_commands failed: RuntimeError: boom in aiimpl_register_commands")
    _contributes_nothing(facade, broken)


def test_a_plugin_refused_after_its_commands_were_added_takes_them_out():
    plugin = Contributor("late")
    core = click.Command("late-hello", callback=lambda: None)  # a command the plugin replaces
    cli = click.Group("aiimpl", commands=[core])
    facade = Plugins(load_entrypoints=False, extra=[plugin])
    facade.add_commands(cli)
    assert cli.commands["late-hello"] is not core

    facade.refuse("late", "refused after start-up")

    assert "late-tracker" not in facade.ids("ticketing")
    assert cli.commands["late-hello"] is core


class ClashingBlueprints(Contributor):
    """Two blueprints of one name: Flask refuses the second, and the app factory marks the plugin
    failed after the registries were built."""

    @hookimpl
    def aiimpl_register_blueprints(self, register: Callable[..., None]) -> None:
        register(Blueprint("clash", __name__), url_prefix="/clash-one")
        register(Blueprint("clash", __name__), url_prefix="/clash-two")


@pytest.fixture
def clashing() -> ClashingBlueprints:
    return ClashingBlueprints("clashing")


class TestAPluginTheAppFactoryRefuses:
    @pytest.fixture
    def aiimpl_plugins(self, clashing: ClashingBlueprints) -> list[object]:
        return [FakeTracker().plugin, clashing]

    def test_its_providers_and_event_hooks_are_taken_out(self, app: Any, clashing: ClashingBlueprints):
        facade = app.extensions["aiimpl"]

        assert facade.records["clashing"].status == "failed"
        assert facade.ids("ticketing") == ["fake-tracker"]
        facade.job_status_changed(7, "ENG-1", None, "dispatched")
        assert clashing.events == []


def test_aiimpl_plugins_list_shows_a_plugin_whose_hook_raises_as_failed_with_nothing_provided(tmp_path: Path):
    site = _site(tmp_path, "acme-half", {"half": "acme_half"}, {"acme_half": """
        from aiimpl_core import hookimpl
        from aiimpl_core.testing.fakes import FakeTracker

        @hookimpl
        def aiimpl_register_ticketing_providers(register):
            register(FakeTracker("half-tracker").provider_class)

        @hookimpl
        def aiimpl_register_runner_backends(register):
            raise RuntimeError("boom while registering")
    """})
    out = _cli(site, tmp_path, "plugins", "list", "--json")

    assert out.returncode == 0, out.stderr
    row = {r["name"]: r for r in json.loads(out.stdout)}["half"]
    assert (row["status"], row["provides"]) == ("failed", [])
    assert row["error"].startswith(
        "aiimpl_register_runner_backends failed: RuntimeError: boom while registering")

    strict = _cli(site, tmp_path, "plugins", "list", "--strict")
    assert strict.returncode == 1
    assert strict.stderr.strip().splitlines()[-1] == "Error: plugins that failed to load: half"


@pytest.mark.parametrize(("hook", "body", "error"), [
    ("aiimpl_register_commands", "raise RuntimeError('boom in commands')",
     "aiimpl_register_commands failed: RuntimeError: boom in commands"),
    ("aiimpl_register_blueprints", "raise RuntimeError('boom in blueprints')",
     "aiimpl_register_blueprints failed: RuntimeError: boom in blueprints"),
    ("aiimpl_register_blueprints", "register(Blueprint('metrics', __name__))",
     "blueprint 'metrics' failed: the name is registered already"),
], ids=["commands-raise", "blueprints-raise", "blueprint-name-taken"])
def test_aiimpl_plugins_list_shows_a_plugin_the_server_refuses_at_start_as_failed(
    tmp_path: Path, hook: str, body: str, error: str
):
    """The server refuses such a plugin when it registers its commands and blueprints: the listing
    (and --strict, a deployment's check) must not call it loaded; the failure is said once."""
    argument = "cli" if hook == "aiimpl_register_commands" else "register"
    site = _site(tmp_path, "acme-late", {"late": "acme_late"}, {"acme_late": f"""
        from flask import Blueprint

        from aiimpl_core import hookimpl
        from aiimpl_core.testing.fakes import FakeTracker

        @hookimpl
        def aiimpl_register_ticketing_providers(register):
            register(FakeTracker("late-tracker").provider_class)

        @hookimpl
        def {hook}({argument}):
            {body}
    """})
    out = _cli(site, tmp_path, "plugins", "list", "--json")

    assert out.returncode == 0, out.stderr
    row = {r["name"]: r for r in json.loads(out.stdout)}["late"]
    assert (row["status"], row["provides"]) == ("failed", [])
    assert row["error"].startswith(error)  # (where it raised follows)
    assert out.stderr.count(error) == 0  # the listing says it; no log line repeats it

    strict = _cli(site, tmp_path, "plugins", "list", "--strict")
    assert strict.returncode == 1
    assert strict.stderr.strip().splitlines()[-1] == "Error: plugins that failed to load: late"
    assert strict.stdout.count(error) == 1


# -- collisions: the later plugin loses ---------------------------------------------------------


class Impostor(ModelProvider):
    id = "anthropic"
    display_name = "Not Anthropic"

    def session_env(self, mapping: Any) -> dict[str, str]:
        return {}


def _impostor(**marker: bool) -> object:
    class Plugin:
        __name__ = "impostor"

        @hookimpl(**marker)
        def aiimpl_register_model_providers(self, register: Callable[..., None]) -> None:
            register(Impostor)

    return Plugin()


TAKEN = ("model provider 'anthropic' is registered by two plugins: plugin anthropic (distribution "
         "aiimpl-core) and plugin impostor")


@pytest.mark.parametrize("marker", [{}, {"tryfirst": True}, {"trylast": True}])
def test_a_plugin_claiming_a_builtin_id_is_refused_and_the_builtin_kept(marker: dict[str, bool]):
    with pytest.raises(DuplicateProviderError) as err:
        Plugins(load_entrypoints=False, extra=[_impostor(**marker)])
    assert err.value.message == TAKEN

    facade = Plugins(load_entrypoints=False, extra=[_impostor(**marker)], strict=False)

    assert facade.conflicts == [TAKEN]
    assert facade.owner("model", "anthropic") == "anthropic"
    assert facade.classes["model"]["anthropic"] is not Impostor
    assert facade.records["anthropic"].status == "loaded"
    assert (facade.records["impostor"].error, facade.records["impostor"].provides) == (TAKEN, [])


def _model_plugin(provider_id: str, *, marker: str = "") -> str:
    """The source of a plugin module registering one model provider of id ``provider_id``."""
    return f"""
        from aiimpl_core import hookimpl
        from aiimpl_core.providers import ModelProvider

        class Model(ModelProvider):
            id = {provider_id!r}
            display_name = "Acme's model"

            def session_env(self, mapping):
                return {{}}

        @hookimpl{marker}
        def aiimpl_register_model_providers(register):
            register(Model)
    """


def test_an_installed_plugin_claiming_a_builtin_id_is_refused(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    site = _site(tmp_path, "acme-models", {"acme_models": "acme_models"},
                 {"acme_models": _model_plugin("anthropic", marker="(tryfirst=True)")})
    monkeypatch.syspath_prepend(str(site))
    try:
        facade = Plugins(strict=False)
    finally:
        sys.modules.pop("acme_models", None)

    assert facade.owner("model", "anthropic") == "anthropic"
    assert facade.records["anthropic"].status == "loaded"
    assert facade.records["acme_models"].error == (
        "model provider 'anthropic' is registered by two plugins: plugin anthropic (distribution "
        "aiimpl-core) and plugin acme_models (distribution acme-models)"
    )


def test_an_entry_point_named_as_a_builtin_qualifies_both(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    """An installed plugin whose entry point is named ``anthropic`` as the built-in is: both load
    under their distribution's name, so the built-in alone can be disabled (it kept the plain name,
    and ``aiimpl-core:anthropic`` in AIIMPL_DISABLED_PLUGINS was ignored)."""
    site = _site(tmp_path, "acme-models", {"anthropic": "acme_claude"},
                 {"acme_claude": _model_plugin("acme-claude")})
    monkeypatch.syspath_prepend(str(site))
    try:
        both = Plugins(strict=False)
        builtin_off = Plugins(strict=False, disabled=["aiimpl-core:anthropic"])
        all_off = Plugins(strict=False, disabled=["anthropic"])
    finally:
        sys.modules.pop("acme_claude", None)

    assert {n: r.status for n, r in both.records.items() if n.endswith("anthropic")} == {
        "aiimpl-core:anthropic": "loaded", "acme-models:anthropic": "loaded"}
    assert {"anthropic", "acme-claude"} <= set(both.ids("model"))
    assert builtin_off.records["aiimpl-core:anthropic"].status == "disabled"
    assert set(builtin_off.ids("model")) >= {"acme-claude"} and "anthropic" not in builtin_off.ids("model")
    assert not {"anthropic", "acme-claude"} & set(all_off.ids("model"))


def test_of_two_plugins_claiming_one_id_the_later_one_is_refused():
    first, second = FakeTracker("same", display_name="First"), FakeTracker("same", display_name="Second")

    facade = Plugins(load_entrypoints=False, extra=[first.plugin, second.plugin], strict=False)

    assert facade.owner("ticketing", "same") == "fake-tracker-same"
    assert facade.classes["ticketing"]["same"] is first.provider_class
    [later] = [name for name in facade.records if name.startswith("fake-tracker-same-")]
    assert facade.conflicts == [
        f"ticketing provider 'same' is registered by two plugins: plugin fake-tracker-same and plugin {later}"
    ]
    assert facade.records[later].status == "failed"


# -- AIIMPL_TRACE_PLUGINS ----------------------------------------------------------------------


def _hook_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("hook: ")]


def test_tracing_logs_each_hook_call_with_its_plugin(caplog: pytest.LogCaptureFixture):
    observer = Contributor("observer")
    with caplog.at_level(logging.DEBUG, logger="aiimpl_core.plugins"):
        facade = Plugins(load_entrypoints=False, extra=[observer], trace=True)
        facade.job_status_changed(7, "ENG-1", None, "dispatched")

    lines = _hook_lines(caplog)
    assert any(line.startswith("hook: aiimpl_register_model_providers(register=")
               and line.endswith("-> plugin anthropic") for line in lines), lines
    assert any(line.startswith("hook: aiimpl_register_ticketing_providers(")
               and line.endswith("-> plugin observer") for line in lines), lines
    assert ("hook: aiimpl_job_status_changed(job_id=7, issue_key='ENG-1', old=None, new='dispatched', "
            "backend=None) "
            "-> plugin observer") in lines
    assert "hook: aiimpl_job_status_changed <- plugin observer: []" in lines
    assert observer.events == [(7, "dispatched")]


def test_tracing_logs_a_hook_that_raises(caplog: pytest.LogCaptureFixture):
    broken = Contributor("broken", "aiimpl_register_runner_backends")
    with caplog.at_level(logging.DEBUG, logger="aiimpl_core.plugins"):
        Plugins(load_entrypoints=False, extra=[broken], trace=True)

    assert ("hook: aiimpl_register_runner_backends <- plugin broken raised RuntimeError: boom in "
            "aiimpl_register_runner_backends") in _hook_lines(caplog)


def test_no_tracing_without_the_setting(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("AIIMPL_TRACE_PLUGINS", raising=False)
    with caplog.at_level(logging.DEBUG, logger="aiimpl_core.plugins"):
        Plugins(load_entrypoints=False).job_status_changed(7, "ENG-1", None, "dispatched")

    assert _hook_lines(caplog) == []


def _provider_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("provider call: ")]


def test_tracing_logs_each_provider_call_with_its_time_and_no_value(caplog: pytest.LogCaptureFixture):
    """A plugin author sees what the core asked of the plugin's providers, in order, and what came
    back or was raised, by type only: a dispatch request's environment holds the session's
    secrets, a model provider's session variables its key."""
    from aiimpl_core.providers import RunnerBackend
    from aiimpl_core.testing.contract import sample_dispatch_request, sample_in_flight_run
    from aiimpl_core.testing.fakes import fail_with

    fake = FakeRunner()
    facade = Plugins(load_entrypoints=False, extra=[fake.plugin], trace=True)
    facade.bind(make_context({}))
    backend = facade.runner("github-actions")
    request = sample_dispatch_request(7, env={"AIIMPL_NONCE": "n0nce-kept-out-of-the-log"})
    with caplog.at_level(logging.DEBUG, logger="aiimpl_core.plugins"):
        result = backend.dispatch(request)
        backend.poll_runs([sample_in_flight_run(request, result)])
        fake.dispatch_error = fail_with(503, "down")
        with pytest.raises(Exception, match="down"):
            backend.dispatch(request)

    lines = _provider_lines(caplog)
    assert [line.split(" in ")[0] for line in lines] == [
        "provider call: runner github-actions.dispatch(DispatchRequest)",
        "provider call: runner github-actions.dispatch(DispatchRequest) -> DispatchResult",
        "provider call: runner github-actions.poll_runs(list[1])",
        "provider call: runner github-actions.poll_runs(list[1]) -> list[1]",
        "provider call: runner github-actions.dispatch(DispatchRequest)",
        "provider call: runner github-actions.dispatch(DispatchRequest) raised ProviderError",
    ]
    assert all(line.endswith(" ms") for line in lines[1::2]), lines
    assert "n0nce" not in caplog.text and "run-" not in caplog.text
    # the wrappers are the instance's: its class is the plugin's as it was (what the core and the
    # contract tests learn from it, such as an optional method left to the base class, too)
    assert isinstance(backend, RunnerBackend) and "dispatch" in vars(backend)
    assert type(backend).dispatch.__qualname__.endswith("Backend.dispatch")


def test_no_provider_call_is_traced_without_the_setting(caplog: pytest.LogCaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch):
    from aiimpl_core.testing.contract import sample_dispatch_request

    monkeypatch.delenv("AIIMPL_TRACE_PLUGINS", raising=False)
    fake = FakeRunner()
    facade = Plugins(load_entrypoints=False, extra=[fake.plugin])
    facade.bind(make_context({}))
    backend = facade.runner("github-actions")
    with caplog.at_level(logging.DEBUG, logger="aiimpl_core.plugins"):
        backend.dispatch(sample_dispatch_request(7))

    assert _provider_lines(caplog) == [] and "dispatch" not in vars(backend)


def test_the_app_logs_the_registration_trace_in_the_operators_format(tmp_path: Path):
    """As under gunicorn: nothing set up logging before the app factory, which sets it up before it
    loads the plugins, so their registration lines are not lost."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIIMPL_")}
    env.update(AIIMPL_LOG_LEVEL="DEBUG", AIIMPL_LOG_FORMAT="json", AIIMPL_TRACE_PLUGINS="1",
               AIIMPL_DATABASE_URL=f"sqlite:///{tmp_path / 'app.db'}")
    done = subprocess.run([sys.executable, "-c", "from aiimpl_core import create_app; create_app()"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    hooks = [line["message"] for line in lines if line["message"].startswith("hook: ")]
    assert any(m.startswith("hook: aiimpl_register_ticketing_providers(") for m in hooks), done.stderr


def test_tracing_follows_the_environment_by_default(caplog: pytest.LogCaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AIIMPL_TRACE_PLUGINS", "1")
    with caplog.at_level(logging.DEBUG, logger="aiimpl_core.plugins"):
        Plugins(load_entrypoints=False)

    assert any(line.startswith("hook: aiimpl_register_model_providers(") for line in _hook_lines(caplog))


def test_the_app_traces_hook_calls_when_the_setting_is_on(tmp_path: Path):
    out = _cli(None, tmp_path, "routes", AIIMPL_TRACE_PLUGINS="1", AIIMPL_LOG_LEVEL="DEBUG")

    assert out.returncode == 0, out.stderr
    for hook in ("aiimpl_register_commands", "aiimpl_register_model_providers", "aiimpl_register_blueprints"):
        assert f"hook: {hook}(" in out.stderr, out.stderr


# -- a tracker that cannot be set up ----------------------------------------------------------


class BrokenConstructor:
    __name__ = "ctor-tracker"

    @hookimpl
    def aiimpl_register_ticketing_providers(self, register: Callable[..., None]) -> None:
        base = FakeTracker("ctor-tracker").provider_class

        class CtorTracker(base):  # type: ignore[misc, valid-type]
            def __init__(self, context: Any) -> None:
                super().__init__(context)
                raise KeyError("AIIMPL_CTOR_TOKEN")

        register(CtorTracker)


def test_trackers_leaves_out_one_that_cannot_be_set_up(caplog: pytest.LogCaptureFixture):
    facade = Plugins(load_entrypoints=False, extra=[BrokenConstructor(), FakeTracker().plugin])
    facade.bind(make_context({}))

    with caplog.at_level(logging.WARNING, logger="aiimpl_core.plugins"):
        assert [t.id for t in facade.trackers()] == ["fake-tracker"]

    assert "setting up the ticketing provider 'ctor-tracker' failed" in caplog.text


class TestLiveIssuesWithATrackerThatCannotBeSetUp:
    @pytest.fixture
    def tracker(self) -> FakeTracker:
        tracker = FakeTracker()
        tracker.add("ENG-1", title="Add a health check")
        return tracker

    @pytest.fixture
    def aiimpl_plugins(self, tracker: FakeTracker) -> list[object]:
        return [BrokenConstructor(), tracker.plugin]

    def test_the_other_trackers_still_list(self, client: Any, admin_headers: dict[str, str]):
        resp = client.get("/api/issues?refresh=1", headers=admin_headers)

        assert resp.status_code == 200, resp.get_json()
        assert [i["issueKey"] for i in resp.get_json()] == ["ENG-1"]


# -- helpers -------------------------------------------------------------------------------------


def _site(tmp_path: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
    """A directory holding one made-up installed distribution with ``entry_points`` (group
    ``aiimpl``) and ``modules``."""
    site = tmp_path / "site"
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[aiimpl]\n{lines}")
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))
    return site


def _cli(site: Path | None, tmp_path: Path, *args: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIIMPL_")}
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    env.update(AIIMPL_DATABASE_URL=f"sqlite:///{tmp_path}/x.db", AIIMPL_SECRET_KEY="k" * 32, **env_extra)
    return subprocess.run([sys.executable, "-m", "aiimpl_core.cli", *args], env=env, capture_output=True,
                          text=True, timeout=60)


class PartlyClashingBlueprints(Contributor):
    """Its first blueprint is fine, its second takes a name the core uses: none of its routes is
    added (a Flask app cannot take the first back once the second is refused)."""

    @hookimpl
    def aiimpl_register_blueprints(self, register: Callable[..., None]) -> None:
        first = Blueprint("partly_fine", __name__)
        first.add_url_rule("/partly-fine", "hello", lambda: "hello")
        register(first)
        register(Blueprint("metrics", __name__), url_prefix="/partly-two")


class TestAPluginWithABlueprintNameTaken:
    @pytest.fixture
    def aiimpl_plugins(self) -> list[object]:
        return [FakeTracker().plugin, PartlyClashingBlueprints("partly")]

    def test_none_of_its_blueprints_is_routed(self, app: Any, client: Any):
        facade = app.extensions["aiimpl"]
        assert facade.records["partly"].error == "blueprint 'metrics' failed: the name is registered already"
        assert "partly_fine" not in app.blueprints
        assert client.get("/partly-fine").status_code == 404
        assert facade.ids("ticketing") == ["fake-tracker"]


class TestAPluginWhoseCommandHookRaises:
    """The server never adds commands, but refuses such a plugin as the command line does."""

    @pytest.fixture
    def broken(self) -> Contributor:
        return Contributor("cmdbroken", "aiimpl_register_commands")

    @pytest.fixture
    def aiimpl_plugins(self, broken: Contributor) -> list[object]:
        return [FakeTracker().plugin, broken]

    def test_the_app_leaves_it_out(self, app: Any, broken: Contributor):
        facade = app.extensions["aiimpl"]
        assert facade.records["cmdbroken"].error.startswith(
            "aiimpl_register_commands failed: RuntimeError: boom in aiimpl_register_commands")
        assert facade.ids("ticketing") == ["fake-tracker"]
        facade.job_status_changed(7, "ENG-1", None, "dispatched")
        assert broken.events == []


def test_a_constructor_that_keeps_failing_is_logged_with_its_traceback_once(caplog: pytest.LogCaptureFixture):
    facade = Plugins(load_entrypoints=False, extra=[BrokenConstructor(), FakeTracker().plugin])
    facade.bind(make_context({}))

    with caplog.at_level(logging.DEBUG, logger="aiimpl_core.plugins"):
        for _ in range(3):  # every poll cycle asks again
            facade.trackers()

    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "ctor-tracker" in r.getMessage()]
    assert len(warned) == 1 and warned[0].exc_text
    again = [r for r in caplog.records if "failed again" in r.getMessage()]
    assert len(again) == 2 and all(not r.exc_text for r in again)


def test_an_import_failure_quoting_a_setting_is_masked_in_the_listing(tmp_path: Path):
    """As in the server's log: a deploy script's ``plugins list --strict`` lands in CI logs."""
    site = _site(tmp_path, "acme-leaky", {"leaky": "acme_leaky"}, {"acme_leaky": """
        import os

        raise RuntimeError("boom " + os.environ["AIIMPL_GITHUB_TOKEN"])
    """})
    token = "ghp_" + "s3cr3t" * 6
    for args in (("--strict",), ("--json",)):
        out = _cli(site, tmp_path, "plugins", "list", *args, AIIMPL_GITHUB_TOKEN=token)
        assert token not in out.stdout + out.stderr
        assert "boom [REDACTED]" in out.stdout


def test_an_import_failure_names_the_plugins_line_and_its_entry_point(tmp_path: Path):
    entry_points = {"missing": "acme_missing", "gone": "acme_gone"}
    site = _site(tmp_path, "acme-missing", entry_points, {"acme_missing": """
        import os

        import this_dependency_is_not_installed
    """})
    out = _cli(site, tmp_path, "plugins", "list", "--json")

    rows = {r["name"]: r for r in json.loads(out.stdout)}
    module = site / "acme_missing.py"
    assert rows["missing"]["error"] == (
        "import failed: ModuleNotFoundError: No module named 'this_dependency_is_not_installed' "
        f"({module}:4) (entry point missing = acme_missing)"
    )
    # a module that is not there at all: no line of the plugin's to name, the entry point says it
    assert rows["gone"]["error"] == (
        "import failed: ModuleNotFoundError: No module named 'acme_gone' (entry point gone = acme_gone)"
    )
