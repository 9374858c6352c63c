"""The plugin manager: built-ins, entry points, broken plugins, collisions, the facade."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from aiimpl_core import hookimpl
from aiimpl_core.errors import DuplicateProviderError
from aiimpl_core.plugins import DEFAULT_PLUGINS, Plugins
from aiimpl_core.providers import ModelProvider
from aiimpl_core.testing.fakes import FakeRunner, FakeTracker


def test_builtin_model_providers_are_plugins():
    facade = Plugins(load_entrypoints=False)
    assert (
        facade.ids("model") == ["anthropic", "bedrock"]
        or set(facade.ids("model")) == {"anthropic", "bedrock"}
    )
    assert len(DEFAULT_PLUGINS) == 2
    assert facade.owner("model", "bedrock") == "bedrock"


def test_extra_plugins_register_their_providers():
    tracker, runner = FakeTracker(), FakeRunner()
    facade = Plugins(load_entrypoints=False, extra=[tracker.plugin, runner.plugin])
    assert "fake-tracker" in facade.ids("ticketing")
    assert facade.runner_modes() == ["gha"]


def test_two_plugins_claiming_one_provider_id_is_an_error_naming_both():
    a, b = FakeTracker("same"), FakeTracker("same")
    with pytest.raises(DuplicateProviderError) as err:
        Plugins(load_entrypoints=False, extra=[a.plugin, b.plugin])
    msg = str(err.value)
    assert "'same'" in msg and "fake-tracker-same" in msg and msg.count("fake-tracker-same") == 2


def test_two_backends_claiming_one_runner_mode_is_an_error():
    with pytest.raises(DuplicateProviderError, match="runner mode 'gha'"):
        Plugins(load_entrypoints=False, extra=[FakeRunner("a", "gha").plugin, FakeRunner("b", "gha").plugin])


class WrongSignature:
    @hookimpl
    def aiimpl_register_model_providers(self, register, unexpected):  # noqa: ANN001, ANN201
        pass


class UnknownHook:
    @hookimpl
    def aiimpl_no_such_hook(self):  # noqa: ANN201
        pass


class RegistersGarbage:
    @hookimpl
    def aiimpl_register_model_providers(self, register):  # noqa: ANN001, ANN201
        register(object)


def test_bad_plugins_are_recorded_not_fatal():
    facade = Plugins(load_entrypoints=False, extra=[WrongSignature(), UnknownHook(), RegistersGarbage()])
    failures = facade.failures()
    assert "invalid hook implementation" in failures["WrongSignature"]
    assert "unknown hook 'aiimpl_no_such_hook'" in failures["UnknownHook"]
    assert failures["RegistersGarbage"] == (
        "aiimpl_register_model_providers: plugin RegistersGarbage registered object, which is not a "
        "subclass of aiimpl_core.providers.ModelProvider"
    )
    assert set(facade.ids("model")) == {"anthropic", "bedrock"}


def test_disabled_plugins_are_blocked():
    facade = Plugins(load_entrypoints=False, disabled=["bedrock"])
    assert facade.ids("model") == ["anthropic"]


def test_a_disabled_name_no_plugin_has_is_said(tmp_path, caplog, monkeypatch):
    """A misspelt name disabled nothing, and nothing said so: the server logs it, `aiimpl plugins
    list` warns of it (and exits 1 with --strict)."""
    facade = Plugins(load_entrypoints=False, disabled=["bedrock ", "bogus", "", "anthropic"])
    assert facade.unknown_disabled == ["bogus"] and facade.ids("model") == []
    said = ("AIIMPL_DISABLED_PLUGINS names bogus, which no installed plugin is called: nothing was disabled "
            "for it (`aiimpl plugins list` shows the names)")
    assert facade.unknown_disabled_said() == said
    assert Plugins(load_entrypoints=False, disabled=["bedrock"]).unknown_disabled_said() is None

    from aiimpl_core.app import create_app

    with caplog.at_level(logging.WARNING, logger="aiimpl"):
        create_app({"AIIMPL_DATABASE_URL": f"sqlite:///{tmp_path}/p.db"}, load_entrypoints=False,
                   environ={"AIIMPL_DISABLED_PLUGINS": "bogus"})
    assert said in [r.getMessage() for r in caplog.records]

    environ = {k: v for k, v in os.environ.items() if not k.startswith("AIIMPL_")}
    environ.update(AIIMPL_DISABLED_PLUGINS="bogus", AIIMPL_INSTANCE_PATH=str(tmp_path))
    script = "from aiimpl_core._entry import main; main()"
    for strict, code, err in ((False, 0, f"Warning: {said}\n"), (True, 1, f"Error: {said}\n")):
        args = ["plugins", "list", *(["--strict"] if strict else [])]
        done = subprocess.run([sys.executable, "-c", script, *args], env=environ, capture_output=True,
                              text=True, timeout=120)
        assert (done.returncode, done.stderr) == (code, err)


def test_event_hook_failures_are_isolated(caplog):
    seen = []

    class Observer:
        @hookimpl
        def aiimpl_job_status_changed(self, job_id, issue_key, old, new):  # noqa: ANN001, ANN201
            seen.append((job_id, new))

    class Broken:
        @hookimpl
        def aiimpl_job_status_changed(self, job_id):  # noqa: ANN001, ANN201
            raise RuntimeError("boom")

    facade = Plugins(load_entrypoints=False, extra=[Observer(), Broken()])
    facade.job_status_changed(1, "ENG-1", None, "dispatched")
    assert seen == [(1, "dispatched")]
    assert "boom" in caplog.text


def _write_broken_dist(tmp_path):
    site = tmp_path / "site"
    dist = site / "broken_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[aiimpl]\nbroken = broken_plugin_mod\n")
    (site / "broken_plugin_mod.py").write_text("import this_module_does_not_exist\n")
    return site


def _env(tmp_path, **extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_write_broken_dist(tmp_path)), env.get("PYTHONPATH", "")])
    env["AIIMPL_DATABASE_URL"] = f"sqlite:///{tmp_path}/x.db"
    env["AIIMPL_SECRET_KEY"] = "k"
    env.update(extra)
    return env


def test_plugins_list_json_shows_builtins_example_and_failures(tmp_path):
    out = subprocess.run([sys.executable, "-m", "aiimpl_core.cli", "plugins", "list", "--json"],
                         env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["anthropic"]["provides"] == [{"kind": "model", "id": "anthropic", "name": "Anthropic API"}]
    assert rows["bedrock"]["kind"] == "model" and rows["bedrock"]["distribution"] == "aiimpl-core"
    assert rows["broken"]["status"] == "failed"
    assert (
        "ModuleNotFoundError" in rows["broken"]["error"]
        and "this_module_does_not_exist" in rows["broken"]["error"]
    )
    assert rows["broken"]["distribution"] == "broken-plugin"
    if "example_runner" in rows:  # installed in the test environment by .ci/run
        assert rows["example_runner"]["provides"][0]["id"] == "example-spool"


def test_example_plugin_is_discovered_through_its_entry_point():
    pytest.importorskip("aiimpl_example_runner")
    facade = Plugins()
    assert "example-spool" in facade.ids("runner")
    assert facade.records["example_runner"].distribution == "aiimpl-example-runner"


def test_serve_starts_with_a_broken_plugin_and_answers_healthz(tmp_path):
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _env(tmp_path)
    subprocess.run([sys.executable, "-m", "aiimpl_core.cli", "db", "upgrade"], env=env, check=True,
                   capture_output=True, timeout=60)
    proc = subprocess.Popen([sys.executable, "-m", "aiimpl_core.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        body = None
        deadline = time.monotonic() + 60  # (a loaded machine starts a server slowly)
        while body is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
                    body = json.loads(resp.read())
            except OSError:
                time.sleep(0.1)
        assert body is not None, proc.stderr.read() if proc.poll() is not None else "no answer"
        assert body["status"] == "ok" and "broken" in body["failedPlugins"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class Sneaky(ModelProvider):
    id = "sneaky"
    display_name = "Sneaky"

    def session_env(self, mapping):  # noqa: ANN001, ANN201
        return {}


def test_provider_instances_are_built_once_per_app(app):
    facade = app.extensions["aiimpl"]
    assert facade.model("anthropic") is facade.model("anthropic")


def _write_colliding_dists(tmp_path):
    """Two installed distributions whose plugins both register the ticketing provider ``clash``."""
    site = tmp_path / "clash-site"
    for n in ("one", "two"):
        dist = site / f"clash_{n}-1.0.dist-info"
        dist.mkdir(parents=True)
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: clash-{n}\nVersion: 1.0\n")
        (dist / "entry_points.txt").write_text(f"[aiimpl]\nclash_{n} = clash_{n}_mod:plugin\n")
        (site / f"clash_{n}_mod.py").write_text(
            "from aiimpl_core.testing.fakes import FakeTracker\n\nplugin = FakeTracker('clash').plugin\n"
        )
    return site


def _cli(tmp_path, *args, collide=True, **env_extra):
    env = _env(tmp_path, **env_extra)
    if collide:
        env["PYTHONPATH"] = os.pathsep.join([str(_write_colliding_dists(tmp_path)), env["PYTHONPATH"]])
    return subprocess.run([sys.executable, "-m", "aiimpl_core.cli", *args], env=env, capture_output=True,
                          text=True, timeout=60)


COLLISION = "Error: ticketing provider 'clash' is registered by two plugins"


@pytest.mark.parametrize("args", [["--help"], []])
def test_help_with_colliding_plugins_lists_the_commands_and_fails_in_one_line(tmp_path, args):
    out = _cli(tmp_path, *args)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.count(COLLISION) == 1, out.stderr
    assert "clash_one (distribution clash-one)" in out.stderr
    assert "serve" in out.stdout + out.stderr and "plugins" in out.stdout + out.stderr


def test_help_when_the_app_refuses_its_configuration_fails_in_one_line(tmp_path):
    refused = "Error: AIIMPL_DATABASE_URL: the mysql database is not supported"
    out = _cli(tmp_path, "--help", collide=False, AIIMPL_DATABASE_URL="mysql://db/aiimpl")
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.count(refused) == 1, out.stderr
    assert "Commands:" in out.stdout and "serve" in out.stdout


@pytest.mark.parametrize("args", [["jobs", "list"], ["routes"], ["no-such-command"]])
def test_commands_with_colliding_plugins_fail_in_one_line(tmp_path, args):
    out = _cli(tmp_path, *args)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.count(COLLISION) == 1, out.stderr


def _runner_plugin(cls: type) -> object:
    class Plugin:
        @hookimpl
        def aiimpl_register_runner_backends(self, register):  # noqa: ANN001, ANN201
            register(cls)

    Plugin.__name__ = f"plugin-{cls.__name__}"
    return Plugin()


def _backend(name: str, **attrs: object) -> type:
    from aiimpl_core.providers import RunnerBackend

    namespace = {"id": name.lower(), "display_name": name, "dispatch": lambda self, request: None,
                 "poll_runs": lambda self, runs: [], **attrs}
    return type(name, (RunnerBackend,), namespace)


def test_register_refuses_config_vars_that_are_not_a_tuple_of_config_vars():
    from aiimpl_core.providers import ConfigVar

    one = _backend("NoComma", config_vars=(ConfigVar("AIIMPL_X_DIR", "dir")))
    names = _backend("Names", config_vars=("AIIMPL_X_DIR",))
    facade = Plugins(load_entrypoints=False, extra=[_runner_plugin(one), _runner_plugin(names)])
    failures = facade.failures()
    assert "whose config_vars is a ConfigVar" in failures["plugin-NoComma"]
    assert "trailing comma" in failures["plugin-NoComma"]
    assert "whose config_vars holds a str ('AIIMPL_X_DIR')" in failures["plugin-Names"]
    assert facade.ids("runner") == []
    assert all(name.startswith("AIIMPL_") for _pid, var in facade.config_vars() for name in [var.name])


def test_register_refuses_a_config_var_named_like_a_core_setting():
    """Declared again, not sensitive, a core secret was printed in clear by ``aiimpl config``
    (``AIIMPL_GITHUB_TOKEN``, ``AIIMPL_SECRET_KEY``) and documented as the plugin said."""
    from aiimpl_core.providers import ConfigVar

    token = ConfigVar("AIIMPL_GITHUB_TOKEN", "GitHub token", sensitive=False)
    again = _backend("Again", config_vars=(token,))
    facade = Plugins(load_entrypoints=False, extra=[_runner_plugin(again)])
    assert "declares AIIMPL_GITHUB_TOKEN, a setting of the core's" in facade.failures()["plugin-Again"]
    assert facade.ids("runner") == []
    assert "AIIMPL_GITHUB_TOKEN" not in [var.name for _pid, var in facade.config_vars()]


def test_register_refuses_a_constructor_that_does_not_take_the_context():
    def __init__(self):  # noqa: ANN001, ANN202, N807
        pass

    facade = Plugins(load_entrypoints=False, extra=[_runner_plugin(_backend("NoContext", __init__=__init__))])
    error = facade.failures()["plugin-NoContext"]
    assert "cannot be called with the ProviderContext alone" in error
    assert facade.ids("runner") == []


def test_register_refuses_capabilities_that_are_not_bools_and_a_runner_mode_not_a_string():
    flag = _backend("Flag", supports_sessions="yes")
    mode = _backend("Mode", runner_mode=3)
    facade = Plugins(load_entrypoints=False, extra=[_runner_plugin(flag), _runner_plugin(mode)])
    assert "whose supports_sessions is not True or False" in facade.failures()["plugin-Flag"]
    assert "whose runner_mode is neither a string nor None" in facade.failures()["plugin-Mode"]


def test_hook_register_runner_backends_returning_classes_warns_that_nothing_was_registered():
    cls = _backend("Returned")

    class Returns:
        @hookimpl
        def aiimpl_register_runner_backends(self, register):  # noqa: ANN001, ANN201
            return [cls]

    facade = Plugins(load_entrypoints=False, extra=[Returns()])
    assert facade.records["Returns"].warnings == [
        "aiimpl_register_runner_backends returned list, which is ignored: call register(cls) with each "
        "class instead"
    ]


def test_wrong_hook_signature_names_both_signatures_on_one_line():
    class Misnamed:
        @hookimpl
        def aiimpl_register_runner_backends(self, registry):  # noqa: ANN001, ANN201
            pass

    error = Plugins(load_entrypoints=False, extra=[Misnamed()]).failures()["Misnamed"]
    assert error == (
        "invalid hook implementation: aiimpl_register_runner_backends(registry) takes registry, which the "
        "hook does not pass: its signature is aiimpl_register_runner_backends(register)"
    )


def test_unknown_hook_names_the_hook_it_is_close_to():
    class Typo:
        @hookimpl
        def aiimpl_register_runner_backend(self, register):  # noqa: ANN001, ANN201
            pass

    error = Plugins(load_entrypoints=False, extra=[Typo()]).failures()["Typo"]
    assert error == (
        "unknown hook 'aiimpl_register_runner_backend' (did you mean aiimpl_register_runner_backends?)"
    )


class _MemoryBackend:
    """A backend that keeps its runs on the instance: what the runner contract must catch."""

    @staticmethod
    def make(**attrs: object) -> object:
        from aiimpl_core.testing.contract import make_context
        from aiimpl_core.types import DispatchResult, RunPhase, RunState

        def __init__(self, context):  # noqa: ANN001, ANN202, N807
            super(cls, self).__init__(context)
            self.runs = {}

        def dispatch(self, request):  # noqa: ANN001, ANN202
            self.runs[request.job_id] = f"run-{request.job_id}"
            return DispatchResult(run_id=self.runs[request.job_id])

        def poll_runs(self, runs):  # noqa: ANN001, ANN202
            return [RunState(r.job_id, RunPhase.RUNNING if r.job_id in self.runs else RunPhase.NOT_FOUND)
                    for r in runs]

        def cancel(self, run):  # noqa: ANN001, ANN202
            self.runs.pop(run.job_id, None)

        methods = {"__init__": __init__, "dispatch": dispatch, "poll_runs": poll_runs, "cancel": cancel}
        cls = _backend("Memory", **{**methods, **attrs})
        return cls(make_context({}))


def _contract_fails(test: str, backend: object, **fixtures: object) -> str:
    from aiimpl_core.testing.contract import RunnerBackendContract

    with pytest.raises(AssertionError) as err:
        getattr(RunnerBackendContract(), test)(backend, **fixtures)
    return str(err.value)


def test_runner_contract_fails_a_backend_that_keeps_its_runs_on_the_instance():
    from aiimpl_core.testing.contract import sample_dispatch_request

    backend = _MemoryBackend.make()
    message = _contract_fails("test_contract_another_instance_polls_and_cancels_the_run", backend,
                              another_runner_backend=type(backend)(backend.context),
                              dispatch_request=sample_dispatch_request())
    assert "not on the instance" in message


def test_runner_contract_fails_a_cancel_that_raises_for_a_run_already_gone():
    from aiimpl_core.testing.contract import RunnerBackendContract, sample_dispatch_request

    def cancel(self, run):  # noqa: ANN001, ANN202
        del self.runs[run.job_id]

    backend = _MemoryBackend.make(cancel=cancel)
    with pytest.raises(AssertionError, match="^cancel raised KeyError .* for a run it had cancelled already"):
        RunnerBackendContract().test_contract_another_instance_polls_and_cancels_the_run(
            backend, backend, sample_dispatch_request())


def test_runner_contract_fails_a_secret_in_a_run_url():
    from aiimpl_core.testing.contract import sample_dispatch_request
    from aiimpl_core.types import DispatchResult

    def dispatch(self, request):  # noqa: ANN001, ANN202
        return DispatchResult(run_id="r1", run_url=f"https://runs.test/r1?nonce={request.env['AIIMPL_NONCE']}")

    backend = _MemoryBackend.make(dispatch=dispatch)
    message = _contract_fails("test_contract_secrets_stay_out_of_run_ids_and_urls", backend,
                              dispatch_request=sample_dispatch_request())
    assert message.startswith("a secret is in 'https://runs.test/r1?nonce=")


def test_runner_contract_says_what_poll_runs_must_answer():
    from aiimpl_core.testing.contract import sample_dispatch_request

    message = _contract_fails("test_contract_dispatch_then_poll",
                              _MemoryBackend.make(poll_runs=lambda self, runs: None),
                              dispatch_request=sample_dispatch_request())
    assert message.startswith("poll_runs of 'memory' answered NoneType, not a list of RunState")


def test_contract_says_config_vars_needs_a_tuple():
    from aiimpl_core.providers import ConfigVar
    from aiimpl_core.testing.contract import RunnerBackendContract

    backend = _MemoryBackend.make(config_vars=(ConfigVar("AIIMPL_X_DIR", "dir")))
    with pytest.raises(AssertionError, match="trailing comma"):
        RunnerBackendContract().test_contract_config_vars_are_named_for_the_project(backend)


def test_contract_says_a_setting_is_named_aiimpl_and_takes_a_list_as_the_core_does():
    """A bare ``AssertionError: BAD_X`` said neither the rule nor the fix; a list, which the core
    loads, was refused."""
    from aiimpl_core.providers import ConfigVar
    from aiimpl_core.testing.contract import RunnerBackendContract

    backend = _MemoryBackend.make(config_vars=(ConfigVar("SPOOL_DIR", "dir"),))
    with pytest.raises(AssertionError, match=r"ConfigVar SPOOL_DIR: a setting's name starts with AIIMPL_ "
                                             r"\(e\.g\. AIIMPL_SPOOL_DIR\)"):
        RunnerBackendContract().test_contract_config_vars_are_named_for_the_project(backend)
    backend = _MemoryBackend.make(config_vars=[ConfigVar("AIIMPL_SPOOL_DIR", "dir")])
    RunnerBackendContract().test_contract_config_vars_are_named_for_the_project(backend)
