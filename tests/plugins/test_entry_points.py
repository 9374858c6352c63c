"""Entry points: one name used by two distributions, registrations the core refuses, warnings."""
from __future__ import annotations

import pytest

from aiimpl_core import hookimpl
from aiimpl_core.errors import DuplicateProviderError
from aiimpl_core.plugins import Plugins
from aiimpl_core.providers import RunnerBackend

from .conftest import Site, backend_module


def test_one_entry_point_name_in_two_distributions_loads_both_under_qualified_names(dists: Site):
    dists.add("acme-alpha", {"spool": "acme_alpha"}, {"acme_alpha": backend_module("alpha-spool")})
    dists.add("acme-beta", {"spool": "acme_beta"}, {"acme_beta": backend_module("beta-spool")}, version="2.0")

    facade = Plugins()

    assert {"alpha-spool", "beta-spool"} <= set(facade.ids("runner"))
    assert "spool" not in facade.records
    rows = {r["name"]: r for r in facade.listing()}
    assert rows["acme-alpha:spool"]["distribution"] == "acme-alpha"
    assert rows["acme-alpha:spool"]["provides"] == [
        {"kind": "runner", "id": "alpha-spool", "name": "Backend alpha-spool"}
    ]
    assert (rows["acme-beta:spool"]["version"], rows["acme-beta:spool"]["entryPoint"]) == ("2.0", "acme_beta")
    assert rows["acme-beta:spool"]["provides"][0]["id"] == "beta-spool"
    assert facade.owner("runner", "beta-spool") == "acme-beta:spool"
    assert facade.failures() == {}


def test_a_qualified_name_disables_one_distribution_and_the_plain_name_both(dists: Site):
    dists.add("acme-alpha", {"spool": "acme_alpha"}, {"acme_alpha": backend_module("alpha-spool")})
    dists.add("acme-beta", {"spool": "acme_beta"}, {"acme_beta": backend_module("beta-spool")})

    one = Plugins(disabled=["acme-beta:spool"])
    both = Plugins(disabled=["spool"])

    assert "alpha-spool" in one.ids("runner") and "beta-spool" not in one.ids("runner")
    assert one.records["acme-beta:spool"].status == "disabled"
    assert one.records["acme-alpha:spool"].status == "loaded"
    assert not {"alpha-spool", "beta-spool"} & set(both.ids("runner"))
    assert {both.records[n].status for n in ("acme-alpha:spool", "acme-beta:spool")} == {"disabled"}


def test_an_entry_point_named_like_a_builtin_does_not_replace_it(dists: Site):
    dists.add("acme-models", {"bedrock": "acme_models"}, {"acme_models": backend_module("acme-runner")})

    facade = Plugins()

    # both qualified by their distribution, the core's built-in too (so either can be disabled)
    builtin = facade.records["aiimpl-core:bedrock"]
    assert builtin.builtin and builtin.status == "loaded" and "bedrock" not in facade.records
    assert facade.owner("model", "bedrock") == "aiimpl-core:bedrock"
    assert facade.owner("runner", "acme-runner") == "acme-models:bedrock"


def test_one_module_under_two_entry_point_names_is_refused_without_a_dump(dists: Site):
    dists.add("acme-twice", {"first": "acme_twice", "second": "acme_twice"},
              {"acme_twice": backend_module("twice")})

    facade = Plugins()

    assert facade.owner("runner", "twice") == "first"
    assert facade.records["second"].error == "acme_twice is already loaded as plugin first"


def test_a_broken_registration_names_the_distribution_and_what_is_missing(dists: Site):
    dists.add("acme-half", {"half": "acme_half"}, {"acme_half": """
        from aiimpl_core import hookimpl
        from aiimpl_core.providers import RunnerBackend

        class Half(RunnerBackend):
            id = "half"
            display_name = "Half"

            def dispatch(self, request):
                raise NotImplementedError

        @hookimpl
        def aiimpl_register_runner_backends(register):
            register(Half)
    """})

    facade = Plugins()

    assert facade.records["half"].error == (
        "aiimpl_register_runner_backends: plugin half (distribution acme-half) registered Half, which "
        "does not implement the abstract method(s) poll_runs"
    )
    assert "plugins.py" not in facade.records["half"].error
    assert "half" not in facade.ids("runner")


class NoDisplayName(RunnerBackend):
    id = "no-display-name"

    def dispatch(self, request):  # noqa: ANN001, ANN201
        raise NotImplementedError

    def poll_runs(self, runs):  # noqa: ANN001, ANN201
        return []


class Registers:
    def __init__(self, what: object) -> None:
        self.__name__ = "registers"
        self.what = what

    @hookimpl
    def aiimpl_register_runner_backends(self, register):  # noqa: ANN001, ANN201
        register(self.what)


@pytest.mark.parametrize(("what", "error"), [
    (NoDisplayName, "registered NoDisplayName, which does not set 'display_name' (a non-empty string)"),
    (NoDisplayName.__new__(NoDisplayName), "registered an instance of NoDisplayName: register the class "
                                           "itself, a subclass of aiimpl_core.providers.RunnerBackend"),
    (RunnerBackend, "registered RunnerBackend, which does not implement the abstract method(s) dispatch, "
                    "poll_runs"),
])
def test_hook_aiimpl_register_runner_backends_refuses_what_cannot_run(what: object, error: str):
    facade = Plugins(load_entrypoints=False, extra=[Registers(what)])

    assert facade.failures() == {"registers": f"aiimpl_register_runner_backends: plugin registers {error}"}
    assert facade.ids("runner") == []


def test_hook_functions_without_hookimpl_are_a_warning(dists: Site):
    dists.add("acme-unmarked", {"unmarked": "acme_unmarked"},
              {"acme_unmarked": backend_module("unmarked", hookimpl=False)})

    facade = Plugins()

    rec = facade.records["unmarked"]
    assert (rec.status, rec.provides) == ("loaded", [])
    assert rec.warnings == [
        "aiimpl_register_runner_backends is not decorated with @aiimpl_core.hookimpl: it is never called"
    ]


def test_a_plugin_with_no_hook_at_all_is_a_warning():
    class Empty:
        __name__ = "empty"

    facade = Plugins(load_entrypoints=False, extra=[Empty()])

    assert facade.records["empty"].warnings == [
        "it implements no hook (no function decorated with @aiimpl_core.hookimpl)"
    ]


def test_a_backend_nothing_can_select_is_a_warning(dists: Site, caplog: pytest.LogCaptureFixture):
    dists.add("acme-idle", {"idle": "acme_idle"},
              {"acme_idle": backend_module("idle", "mapping_selectable = False\n")})

    facade = Plugins()
    facade.bind(None)  # type: ignore[arg-type]

    assert facade.records["idle"].warnings == [
        "backend 'idle' is not mapping_selectable and has no runner_mode: no job is ever dispatched to it"
    ]
    assert "plugin idle (distribution acme-idle): backend 'idle' is not mapping_selectable" in caplog.text


def test_a_collision_is_recorded_on_the_later_plugin_when_not_strict(dists: Site):
    dists.add("acme-one", {"one": "acme_one"}, {"acme_one": backend_module("same")})
    dists.add("acme-two", {"two": "acme_two"}, {"acme_two": backend_module("same")})

    with pytest.raises(DuplicateProviderError):
        Plugins()
    facade = Plugins(strict=False)

    [message] = facade.conflicts
    assert message.startswith("runner provider 'same' is registered by two plugins: plugin ")
    assert "plugin one (distribution acme-one)" in message and "plugin two (distribution acme-two)" in message
    assert message.endswith("plugin one (distribution acme-one) and plugin two (distribution acme-two)")
    assert facade.owner("runner", "same") == "one"  # loaded first (entry points in order of name)
    assert facade.records["two"].error == message and facade.records["two"].provides == []
    assert facade.records["one"].status == "loaded"


def test_loading_logs_nothing_above_debug(dists: Site, caplog: pytest.LogCaptureFixture):
    dists.add("acme-broken", {"broken": "acme_broken"}, {"acme_broken": "import acme_no_such_module\n"})

    facade = Plugins()

    assert facade.records["broken"].status == "failed"
    assert [r for r in caplog.records if r.levelname not in ("DEBUG",)] == []


def test_a_runner_mode_claimed_twice_refuses_the_later_plugin_whole():
    from aiimpl_core.testing.fakes import FakeRunner

    class TwoBackends:
        __name__ = "two-backends"

        def __init__(self) -> None:
            self.backends = [FakeRunner("b1", "gha").backend_class, FakeRunner("b2", "fly").backend_class]

        @hookimpl
        def aiimpl_register_runner_backends(self, register):  # noqa: ANN001, ANN201
            for backend in self.backends:
                register(backend)

    first = FakeRunner("a1", "gha")
    extra = [first.plugin, TwoBackends(), FakeRunner("c1", "fly").plugin]
    facade = Plugins(load_entrypoints=False, extra=extra, strict=False)

    [conflict] = facade.conflicts
    assert conflict.startswith("runner mode ") and "(plugin two-backends)" in conflict
    refused = facade.records["two-backends"]
    assert (refused.error, refused.provides) == (conflict, [])
    assert sorted(facade.runner_modes()) == ["fly", "gha"]
    assert facade.owner("runner", "a1") == "fake-runner-a1"
    assert facade.owner("runner", "c1") == "fake-runner-c1"
