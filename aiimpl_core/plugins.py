"""The plugin manager and the typed facade over it.

:func:`make_plugin_manager` is the one function that builds a pluggy manager for the ``aiimpl``
project. :class:`Plugins` is the only place that calls hooks: it builds the provider registries,
records which plugin registered what, and turns plugin failures into :class:`PluginLoadError`
records instead of crashing the server.
"""
from __future__ import annotations

import importlib
import inspect
import logging
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from . import hookspecs
from .errors import AiimplError, DuplicateProviderError, NotFound, PluginContractError, ProviderError
from .providers import ModelProvider, Provider, ProviderContext, RunnerBackend, TicketingProvider

if TYPE_CHECKING:
    import click
    from flask import Blueprint

    from .types import JobStatus, Stage

log = logging.getLogger(__name__)

PROJECT = hookspecs.PROJECT
ENTRY_POINT_GROUP = "aiimpl"

#: Built-in plugins, registered like any other (the model providers).
DEFAULT_PLUGINS: tuple[str, ...] = (
    "aiimpl_core.default_plugins.anthropic",
    "aiimpl_core.default_plugins.bedrock",
)

KINDS = {
    "ticketing": TicketingProvider,
    "runner": RunnerBackend,
    "model": ModelProvider,
}

P = TypeVar("P", bound=Provider)


@dataclass
class PluginRecord:
    """One plugin as ``aiimpl plugins list`` shows it."""

    name: str
    distribution: str | None = None
    version: str | None = None
    builtin: bool = False
    provides: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None
    disabled: bool = False

    @property
    def kinds(self) -> list[str]:
        return sorted({p["kind"] for p in self.provides})

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "builtin": self.builtin,
            "kind": ", ".join(self.kinds) or None,
            "provides": list(self.provides),
            "status": "disabled" if self.disabled else ("failed" if self.error else "loaded"),
            "error": self.error,
        }


def _describe_exception(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


def make_plugin_manager(
    load_entrypoints: bool = True,
    extra: Iterable[object] = (),
    disabled: Iterable[str] = (),
    records: dict[str, PluginRecord] | None = None,
) -> pluggy.PluginManager:
    """Build the plugin manager: specs, built-ins, entry points of group ``aiimpl``, then ``extra``.

    A plugin that fails to import or whose hooks do not match the specs is left out and recorded
    in ``records`` with its error. Ends with ``check_pending()``.
    """
    records = records if records is not None else {}
    blocked = {name.strip() for name in disabled if name.strip()}
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)

    for modname in DEFAULT_PLUGINS:
        short = modname.rsplit(".", 1)[1]
        rec = records.setdefault(short, PluginRecord(short, "aiimpl-core", _core_version(), builtin=True))
        if short in blocked:
            rec.disabled = True
            continue
        _register(pm, importlib.import_module(modname), short, rec)

    if load_entrypoints:
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            rec = records.setdefault(
                ep.name,
                PluginRecord(ep.name, dist.metadata["Name"] if dist else None, dist.version if dist else None),
            )
            if ep.name in blocked:
                rec.disabled = True  # an operator's choice, not a failure
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not take the server down
                rec.error = f"import failed: {_describe_exception(exc)}"
                log.error("plugin %s (%s) failed to load: %s", ep.name, rec.distribution, rec.error)
                continue
            _register(pm, plugin, ep.name, rec)

    for plugin in extra:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        if pm.get_plugin(name) is not None:
            name = f"{name}-{id(plugin)}"
        rec = records.setdefault(name, PluginRecord(name))
        _register(pm, plugin, name, rec)

    pm.check_pending()
    return pm


def _core_version() -> str:
    from . import __version__

    return __version__


def _register(pm: pluggy.PluginManager, plugin: object, name: str, rec: PluginRecord) -> None:
    try:
        pm.register(plugin, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        rec.error = f"invalid hook implementation: {exc}"
        log.error("plugin %s rejected: %s", name, rec.error)
        return
    # A hook implementation named like ours but with no spec would fail check_pending() for
    # everyone: reject just this plugin instead.
    for hookimpl in pm.get_hookcallers(plugin) or []:
        if hookimpl.spec is None:
            pm.unregister(plugin)
            rec.error = f"unknown hook {hookimpl.name!r}"
            log.error("plugin %s rejected: %s", name, rec.error)
            return


class Plugins:
    """Typed facade over the plugin manager, one per application (``app.extensions["aiimpl"]``)."""

    def __init__(
        self,
        *,
        load_entrypoints: bool = True,
        extra: Iterable[object] = (),
        disabled: Iterable[str] = (),
        trace: bool = False,
    ) -> None:
        self.records: dict[str, PluginRecord] = {}
        self.pm = make_plugin_manager(load_entrypoints, extra, disabled, self.records)
        if trace:
            self.pm.trace.root.setwriter(lambda msg: log.debug("hook: %s", msg.rstrip()))
            self.pm.enable_tracing()
        self.classes: dict[str, dict[str, type[Provider]]] = {kind: {} for kind in KINDS}
        self._owner: dict[tuple[str, str], str] = {}
        self._instances: dict[tuple[str, str], Provider] = {}
        self.context: ProviderContext | None = None
        self._build_registries()

    # -- registries ---------------------------------------------------------------------------

    def _impls(self, hook_name: str) -> list[Any]:
        return list(getattr(self.pm.hook, hook_name).get_hookimpls())

    def _build_registries(self) -> None:
        for kind, hook in (
            ("ticketing", "aiimpl_register_ticketing_providers"),
            ("runner", "aiimpl_register_runner_backends"),
            ("model", "aiimpl_register_model_providers"),
        ):
            for impl in reversed(self._impls(hook)):  # registration order
                self._call_register(impl, kind)
        modes: dict[str, str] = {}
        for backend_id, cls in self.classes["runner"].items():
            mode = getattr(cls, "runner_mode", None)
            if mode:
                if mode in modes:
                    raise DuplicateProviderError(
                        f"runner mode {mode!r} is claimed by backend {modes[mode]!r} "
                        f"(plugin {self._owner[('runner', modes[mode])]}) and backend {backend_id!r} "
                        f"(plugin {self._owner[('runner', backend_id)]})"
                    )
                modes[mode] = backend_id

    def _call_register(self, impl: Any, kind: str) -> None:
        plugin_name = impl.plugin_name
        base = KINDS[kind]
        rec = self.records.setdefault(plugin_name, PluginRecord(plugin_name))

        def register(cls: type[Provider]) -> None:
            if not (inspect.isclass(cls) and issubclass(cls, base)) or inspect.isabstract(cls):
                raise PluginContractError(
                    f"plugin {plugin_name} registered {cls!r}, which is not a concrete {base.__name__}",
                    plugin=plugin_name,
                )
            provider_id = getattr(cls, "id", None)
            if not isinstance(provider_id, str) or not provider_id:
                raise PluginContractError(f"plugin {plugin_name}: {cls.__name__}.id must be a non-empty string")
            key = (kind, provider_id)
            if key in self._owner and self._owner[key] != plugin_name:
                raise DuplicateProviderError(
                    f"{kind} provider {provider_id!r} is registered by two plugins: "
                    f"{self._owner[key]} and {plugin_name}"
                )
            self._owner[key] = plugin_name
            self.classes[kind][provider_id] = cls
            rec.provides.append({"kind": kind, "id": provider_id, "name": getattr(cls, "display_name", provider_id)})

        try:
            impl.function(register=register)
        except DuplicateProviderError:
            raise
        except Exception as exc:  # one plugin's failure is reported, not fatal
            rec.error = f"{impl.function.__name__} failed: {_describe_exception(exc)}"
            log.error("plugin %s: %s", plugin_name, rec.error)
            # drop what this plugin registered for this kind: half a plugin is worse than none
            for (k, pid), owner in list(self._owner.items()):
                if owner == plugin_name and k == kind:
                    del self._owner[(k, pid)]
                    self.classes[k].pop(pid, None)
            rec.provides = [p for p in rec.provides if p["kind"] != kind]

    def bind(self, context: ProviderContext) -> None:
        """Give the facade the context providers are built with (done by the app factory)."""
        self.context = context
        self._instances.clear()

    # -- providers ----------------------------------------------------------------------------

    def ids(self, kind: str) -> list[str]:
        return list(self.classes[kind])

    def owner(self, kind: str, provider_id: str) -> str | None:
        return self._owner.get((kind, provider_id))

    def _get(self, kind: str, provider_id: str, expected: type[P]) -> P:
        key = (kind, provider_id)
        inst = self._instances.get(key)
        if inst is None:
            cls = self.classes[kind].get(provider_id)
            if cls is None:
                raise NotFound(f"no {kind} provider {provider_id!r} is installed")
            if self.context is None:
                raise RuntimeError("Plugins.bind() was not called")
            try:
                inst = cls(self.context)
            except AiimplError:
                raise
            except Exception as exc:
                # a plugin's constructor that breaks: its own message may carry a setting's value,
                # so the operator is told where to look; the log has the traceback
                log.warning("setting up the %s provider %r failed", kind, provider_id, exc_info=True)
                raise ProviderError(
                    f"the {kind} provider {provider_id!r} could not be set up ({type(exc).__name__}); "
                    "the server log has the details",
                    provider=provider_id,
                ) from exc
            self._instances[key] = inst
        assert isinstance(inst, expected)
        return inst

    def ticketing(self, provider_id: str) -> TicketingProvider:
        return self._get("ticketing", provider_id, TicketingProvider)

    def runner(self, provider_id: str) -> RunnerBackend:
        return self._get("runner", provider_id, RunnerBackend)

    def model(self, provider_id: str) -> ModelProvider:
        return self._get("model", provider_id, ModelProvider)

    def all(self, kind: str) -> list[Provider]:
        return [self._get(kind, pid, Provider) for pid in self.classes[kind]]

    def runners(self) -> list[RunnerBackend]:
        """The runner backends that could be set up: one whose constructor fails is left out (and
        logged), so it cannot take the sessions, secrets or gap-fill of the others down with it."""
        out: list[RunnerBackend] = []
        for pid in self.classes["runner"]:
            try:
                out.append(self.runner(pid))
            except ProviderError:
                continue
        return out

    def trackers(self) -> list[TicketingProvider]:
        return [self.ticketing(pid) for pid in self.classes["ticketing"]]

    def runner_for_mode(self, mode: str) -> RunnerBackend | None:
        for pid, cls in self.classes["runner"].items():
            if getattr(cls, "runner_mode", None) == mode:
                return self.runner(pid)
        return None

    def runner_modes(self) -> list[str]:
        return [cls.runner_mode for cls in self.classes["runner"].values() if getattr(cls, "runner_mode", None)]

    def selectable_execution_modes(self) -> list[str]:
        return [pid for pid, cls in self.classes["runner"].items() if getattr(cls, "mapping_selectable", True)]

    def config_vars(self) -> list[tuple[str, Any]]:
        """Every ``ConfigVar`` declared by an installed provider, with the provider id."""
        out = []
        for kind in KINDS:
            for pid, cls in self.classes[kind].items():
                for var in getattr(cls, "config_vars", ()):
                    out.append((pid, var))
        return out

    # -- other hooks --------------------------------------------------------------------------

    def blueprints(self) -> list[tuple[str, Blueprint, dict[str, Any]]]:
        found: list[tuple[str, Blueprint, dict[str, Any]]] = []
        for impl in reversed(self._impls("aiimpl_register_blueprints")):

            def register(blueprint: Blueprint, *, url_prefix: str | None = None, _p: str = impl.plugin_name) -> None:
                found.append((_p, blueprint, {"url_prefix": url_prefix} if url_prefix else {}))

            try:
                impl.function(register=register)
            except Exception as exc:
                rec = self.records.setdefault(impl.plugin_name, PluginRecord(impl.plugin_name))
                rec.error = f"aiimpl_register_blueprints failed: {_describe_exception(exc)}"
                log.error("plugin %s: %s", impl.plugin_name, rec.error)
        return found

    def add_commands(self, cli: click.Group) -> None:
        for impl in reversed(self._impls("aiimpl_register_commands")):
            try:
                impl.function(cli=cli)
            except Exception as exc:
                rec = self.records.setdefault(impl.plugin_name, PluginRecord(impl.plugin_name))
                rec.error = f"aiimpl_register_commands failed: {_describe_exception(exc)}"
                log.error("plugin %s: %s", impl.plugin_name, rec.error)

    def _notify(self, hook_name: str, **kwargs: Any) -> None:
        for impl in self._impls(hook_name):
            try:
                impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
            except Exception:
                log.exception("plugin %s failed in %s", impl.plugin_name, hook_name)

    def job_status_changed(self, job_id: int, issue_key: str, old: JobStatus | None, new: JobStatus) -> None:
        self._notify("aiimpl_job_status_changed", job_id=job_id, issue_key=issue_key, old=old, new=new)

    def issue_stage_changed(self, issue_key: str, old: Stage | None, new: Stage) -> None:
        self._notify("aiimpl_issue_stage_changed", issue_key=issue_key, old=old, new=new)

    # -- reporting ----------------------------------------------------------------------------

    def listing(self) -> list[dict[str, Any]]:
        return [rec.as_dict() for rec in sorted(self.records.values(), key=lambda r: (not r.builtin, r.name))]

    def failures(self) -> Mapping[str, str]:
        return {name: rec.error for name, rec in self.records.items() if rec.error}

