"""The plugin manager and the typed facade over it.

:func:`make_plugin_manager` is the one function that builds a pluggy manager for the ``aiimpl``
project. :class:`Plugins` is the only place that calls hooks: it builds the provider registries,
records which plugin registered what, and turns a plugin's failure into its
:class:`PluginRecord`'s error (the plugin then contributes nothing) instead of crashing the server.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import os
import reprlib
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from . import hookspecs
from .config import SETTINGS
from .errors import AiimplError, DuplicateProviderError, NotFound, PluginContractError, ProviderError
from .providers import ConfigVar, ModelProvider, Provider, ProviderContext, RunnerBackend, TicketingProvider

if TYPE_CHECKING:
    import click
    from flask import Blueprint

    from .types import JobStatus, Stage

log = logging.getLogger(__name__)
#: the core's own settings: no provider declares one again (see :func:`_refusal`)
CORE_SETTINGS = frozenset(setting.name for setting in SETTINGS)

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
    """One plugin as ``aiimpl plugins list`` shows it.

    ``name`` is the entry point's name, or ``<distribution>:<entry point>`` when two distributions
    (or a distribution and a built-in) use the same entry-point name.
    """

    name: str
    distribution: str | None = None
    version: str | None = None
    builtin: bool = False
    provides: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None
    disabled: bool = False
    #: what the entry point names (``my_package.plugin``)
    entry_point: str | None = None
    #: problems that do not stop the plugin from loading (a hook function without ``@hookimpl``)
    warnings: list[str] = field(default_factory=list)

    @property
    def kinds(self) -> list[str]:
        return sorted({p["kind"] for p in self.provides})

    @property
    def status(self) -> str:
        return "disabled" if self.disabled else ("failed" if self.error else "loaded")

    @property
    def who(self) -> str:
        """The plugin as messages name it: ``plugin spool (distribution acme-spool)``."""
        return f"plugin {self.name}" + (f" (distribution {self.distribution})" if self.distribution else "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "entryPoint": self.entry_point,
            "builtin": self.builtin,
            "kind": ", ".join(self.kinds) or None,
            "provides": list(self.provides),
            "status": self.status,
            "error": self.error,
            "warnings": list(self.warnings),
        }


def _describe_exception(exc: BaseException) -> str:
    """The exception's class and message, and the last line of the plugin's own code it passed:
    the import machinery's frames (an import that failed ends in them) say nothing of the plugin."""
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    own = [f for f in frames if not _machinery(f.filename)]
    where = f" ({own[-1].filename}:{own[-1].lineno})" if own else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _machinery(filename: str) -> bool:
    """Whether a frame is the import system's or entry-point loading's (this module's included),
    not a plugin's."""
    return filename.startswith("<frozen ") or filename == __file__ or any(
        filename.endswith(tail) for tail in ("importlib/__init__.py", "importlib/metadata/__init__.py",
                                             "pluggy/_manager.py")
    )


def make_plugin_manager(
    load_entrypoints: bool = True,
    extra: Iterable[object] = (),
    disabled: Iterable[str] = (),
    records: dict[str, PluginRecord] | None = None,
) -> pluggy.PluginManager:
    """Build the plugin manager: specs, built-ins, entry points of group ``aiimpl``, then ``extra``.

    A plugin that fails to import or whose hooks do not match the specs is left out and recorded
    in ``records`` with its error; a problem that does not stop it (a hook function without
    ``@hookimpl``) is recorded as a warning. Nothing is logged here at more than debug level: the
    process that builds the manager decides how to report (the app factory logs each failure
    once, ``aiimpl plugins list`` prints them). Ends with ``check_pending()``.

    An entry-point name that two distributions use, or that a built-in has, is qualified by its
    distribution (``acme-spool:spool``, ``aiimpl-core:anthropic``) for every distribution that uses
    it, the core's built-ins included, so each loads under a name that does not depend on the
    order of installation. ``disabled`` names a plugin by either name: the plain name blocks every
    plugin of that name.
    """
    records = records if records is not None else {}
    blocked = {name.strip() for name in disabled if name.strip()}
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    eps = sorted(
        metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, _dist_name(e) or "")
    ) if load_entrypoints else []
    claims = Counter(ep.name for ep in eps)
    builtins = set()

    for modname in DEFAULT_PLUGINS:
        short = modname.rsplit(".", 1)[1]
        builtins.add(short)
        name = f"aiimpl-core:{short}" if claims[short] else short
        rec = records.setdefault(
            name, PluginRecord(name, "aiimpl-core", _core_version(), builtin=True, entry_point=modname)
        )
        if short in blocked or name in blocked:
            rec.disabled = True
            continue
        _register(pm, importlib.import_module(modname), name, rec)

    if eps:
        for ep in eps:
            dist = getattr(ep, "dist", None)
            dist_name = _dist_name(ep)
            name = ep.name
            if claims[ep.name] > 1 or ep.name in records or ep.name in builtins:
                name = _free_name(records, f"{dist_name or ep.value}:{ep.name}")
            rec = records[name] = PluginRecord(
                name, dist_name, dist.version if dist else None, entry_point=ep.value
            )
            if ep.name in blocked or name in blocked:
                rec.disabled = True  # an operator's choice, not a failure
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not take the server down
                rec.error = f"import failed: {_describe_exception(exc)} (entry point {ep.name} = {ep.value})"
                log.debug("%s failed to load: %s", rec.who, rec.error)
                continue
            _register(pm, plugin, name, rec)

    for plugin in extra:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        if pm.get_plugin(name) is not None or name in records:
            name = f"{name}-{id(plugin)}"
        rec = records.setdefault(name, PluginRecord(name))
        if name in blocked:
            rec.disabled = True
            continue
        _register(pm, plugin, name, rec)

    pm.check_pending()
    return pm


def _dist_name(ep: metadata.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else None


def _free_name(records: Mapping[str, PluginRecord], name: str) -> str:
    candidate, n = name, 1
    while candidate in records:
        n += 1
        candidate = f"{name}#{n}"
    return candidate


def _core_version() -> str:
    from . import __version__

    return __version__


def _register(pm: pluggy.PluginManager, plugin: object, name: str, rec: PluginRecord) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        rec.error = f"invalid hook implementation: {_signature_problem(pm, plugin) or _one_line(str(exc))}"
        log.debug("%s rejected: %s", rec.who, rec.error)
        return
    except ValueError:
        # pluggy's own message carries its table of every registered plugin: not for an operator
        other = pm.get_name(plugin)
        rec.error = (
            f"{rec.entry_point or 'this object'} is already loaded as plugin {other}"
            if other else f"the name {name!r} is already taken by another plugin"
        )
        log.debug("%s rejected: %s", rec.who, rec.error)
        return
    # A hook implementation named like ours but with no spec would fail check_pending() for
    # everyone: reject just this plugin instead.
    hookcallers = pm.get_hookcallers(plugin) or []
    for hookimpl in hookcallers:
        if hookimpl.spec is None:
            pm.unregister(plugin)
            rec.error = f"unknown hook {hookimpl.name!r}{_did_you_mean(hookimpl.name)}"
            log.debug("%s rejected: %s", rec.who, rec.error)
            return
    unmarked = _unmarked_hooks(pm, plugin)
    for hook_name in unmarked:
        rec.warnings.append(f"{hook_name} is not decorated with @aiimpl_core.hookimpl: it is never called")
    if not hookcallers and not unmarked:
        rec.warnings.append("it implements no hook (no function decorated with @aiimpl_core.hookimpl)")


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _did_you_mean(hook_name: str) -> str:
    """`` (did you mean aiimpl_…?)`` when a hook of the project is named nearly so, else ``""``."""
    known = [name for name in dir(hookspecs) if name.startswith(f"{PROJECT}_")]
    close = difflib.get_close_matches(hook_name, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _signature_problem(pm: pluggy.PluginManager, plugin: object) -> str | None:
    """The first hook implementation of ``plugin`` whose arguments its hook does not have, said
    with both signatures (pluggy's own message spans lines and names neither the expected one)."""
    for attr in dir(plugin):
        if pm.parse_hookimpl_opts(plugin, attr) is None:
            continue
        spec = getattr(hookspecs, attr, None)
        if spec is None:
            continue
        try:
            given = list(inspect.signature(getattr(plugin, attr)).parameters)
        except (TypeError, ValueError):
            continue
        expected = list(inspect.signature(spec).parameters)
        unknown = [arg for arg in given if arg not in expected]
        if unknown:
            return (f"{attr}({', '.join(given)}) takes {', '.join(unknown)}, which the hook does not pass: "
                    f"its signature is {attr}({', '.join(expected)})")
    return None


def _unmarked_hooks(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """Functions of ``plugin`` named like a hook but without the ``@hookimpl`` marker."""
    found = []
    for attr in dir(plugin):
        if not attr.startswith(f"{PROJECT}_"):
            continue
        try:
            value = getattr(plugin, attr)
        except Exception:  # noqa: BLE001 - a property that fails is no hook function
            continue
        if inspect.isroutine(value) and pm.parse_hookimpl_opts(plugin, attr) is None:
            found.append(attr)
    return found


def _refusal(cls: object, base: type[Provider]) -> str | None:
    """Why ``cls`` cannot be registered as a ``base`` (the rest of a sentence), or ``None``."""
    expected = f"aiimpl_core.providers.{base.__name__}"
    if not inspect.isclass(cls):
        return (f"registered an instance of {type(cls).__qualname__}: register the class itself, "
                f"a subclass of {expected}")
    if not issubclass(cls, base):
        return f"registered {cls.__qualname__}, which is not a subclass of {expected}"
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        return f"registered {cls.__qualname__}, which does not implement the abstract method(s) {missing}"
    for attr in ("id", "display_name"):
        value = getattr(cls, attr, None)
        if not isinstance(value, str) or not value.strip():
            return f"registered {cls.__qualname__}, which does not set {attr!r} (a non-empty string)"
    config_vars = getattr(cls, "config_vars", ())
    if not isinstance(config_vars, (tuple, list)):
        single = isinstance(config_vars, ConfigVar)
        hint = " (a single one needs a trailing comma: (ConfigVar(...),))" if single else ""
        return (f"registered {cls.__qualname__}, whose config_vars is a {type(config_vars).__name__}, "
                f"not a tuple of aiimpl_core.providers.ConfigVar{hint}")
    for var in config_vars:
        if not isinstance(var, ConfigVar):
            return (f"registered {cls.__qualname__}, whose config_vars holds a {type(var).__name__} "
                    f"({var!r:.60}), not an aiimpl_core.providers.ConfigVar")
        if var.name in CORE_SETTINGS:
            # declared again, it would be shown and documented as the plugin says (a secret of the
            # core's said not sensitive is printed by `aiimpl config`): a plugin reads a core setting
            # from the app's configuration, as it is
            return (f"registered {cls.__qualname__}, whose config_vars declares {var.name}, a setting of "
                    "the core's: read it from the provider context's config instead")
    if issubclass(cls, RunnerBackend):
        for flag in ("mapping_selectable", "supports_sessions", "supports_secrets", "supports_workflow_sync",
                     "supports_gap_fill"):
            if not isinstance(getattr(cls, flag), bool):
                return f"registered {cls.__qualname__}, whose {flag} is not True or False"
        mode = cls.runner_mode
        if mode is not None and not isinstance(mode, str):
            return f"registered {cls.__qualname__}, whose runner_mode is neither a string nor None"
    return _constructor_refusal(cls)


def _constructor_refusal(cls: type) -> str | None:
    """Why ``cls(context)`` cannot be called, or ``None``: the core builds every provider so."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # a signature Python cannot read: left to the first use
        return None
    try:
        signature.bind(object())
    except TypeError:
        return (f"registered {cls.__qualname__}, whose constructor {cls.__qualname__}{signature} cannot "
                "be called with the ProviderContext alone: it must take that one argument, and pass it "
                "to super().__init__(context)")
    return None


def _runner_warnings(cls: type[Provider]) -> list[str]:
    from .config import RUNNER_MODES

    forced = [m for m in RUNNER_MODES if m not in ("default", "shadow")]
    mode = getattr(cls, "runner_mode", None)
    if mode and mode not in forced:
        return [f"backend {cls.id!r}: runner_mode {mode!r} is none of {', '.join(forced)}: no runner "
                "mode selects it"]
    if not mode and not getattr(cls, "mapping_selectable", True):
        return [f"backend {cls.id!r} is not mapping_selectable and has no runner_mode: no job is "
                "ever dispatched to it"]
    return []


def _blueprint_collector(
    plugin_name: str, into: list[tuple[str, Blueprint, dict[str, Any]]]
) -> Callable[..., None]:
    """The ``register`` passed to ``plugin_name``'s ``aiimpl_register_blueprints``."""

    def register(blueprint: Blueprint, *, url_prefix: str | None = None) -> None:
        into.append((plugin_name, blueprint, {"url_prefix": url_prefix} if url_prefix else {}))

    return register


#: the registration hooks of the provider kinds, in the order each plugin's are called
REGISTRATION_HOOKS = (
    ("ticketing", "aiimpl_register_ticketing_providers"),
    ("runner", "aiimpl_register_runner_backends"),
    ("model", "aiimpl_register_model_providers"),
)


def _trace_from_environ() -> bool:
    """``AIIMPL_TRACE_PLUGINS`` of the environment, false when unset or not valid (the
    configuration check reports a value that is not valid)."""
    from .config import SETTINGS_BY_NAME

    raw = os.environ.get("AIIMPL_TRACE_PLUGINS")
    try:
        return bool(raw) and bool(SETTINGS_BY_NAME["AIIMPL_TRACE_PLUGINS"].parse(raw))
    except ValueError:
        return False


def _trace_hook_calls(pm: pluggy.PluginManager) -> None:
    """Log each hook call through ``pm`` at debug level: the hook, its arguments and the plugins
    called, then what they answered or raised (one line each)."""
    shorten = reprlib.Repr()
    shorten.maxstring = shorten.maxother = 80

    def plugins(impls: Iterable[Any]) -> str:
        names = list(dict.fromkeys(impl.plugin_name for impl in impls))
        return f"plugin{'s' if len(names) > 1 else ''} {', '.join(names)}" if names else "no plugin"

    def before(hook_name: str, impls: list[Any], kwargs: Mapping[str, object]) -> None:
        args = ", ".join(f"{name}={shorten.repr(value)}" for name, value in kwargs.items())
        log.debug("hook: %s(%s) -> %s", hook_name, args, plugins(impls))

    def after(outcome: Any, hook_name: str, impls: list[Any], kwargs: Mapping[str, object]) -> None:
        if outcome.exception is not None:
            exc = outcome.exception
            log.debug("hook: %s <- %s raised %s: %s", hook_name, plugins(impls), type(exc).__name__, exc)
        else:
            log.debug("hook: %s <- %s: %s", hook_name, plugins(impls), shorten.repr(outcome.get_result()))

    pm.add_hookcall_monitoring(before, after)


#: the provider methods the core calls, per kind: what ``AIIMPL_TRACE_PLUGINS`` logs besides hooks
TRACED_METHODS: dict[str, tuple[str, ...]] = {
    "ticketing": ("check", "iter_triggered", "get_issue", "post_comment", "post_comment_once", "set_stage",
                  "mark_done", "team_of"),
    "runner": ("check", "dispatch", "dispatch_gap_fill", "poll_runs", "cancel", "sweep", "list_sessions",
               "destroy_session", "sync_workflows"),
    "model": ("check", "session_env", "secret_env_names", "required_env_names"),
}


def _shape(value: object) -> str:
    """What a traced call was given or answered, without its value (which may be a secret: a
    dispatch request's environment, a model provider's session variables): its type, and the
    number of items of a collection."""
    name = type(value).__name__
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        return f"{name}[{len(value)}]"
    return name


def _trace_provider_calls(inst: Provider, kind: str, provider_id: str) -> None:
    """Log each call of ``inst``'s provider methods (:data:`TRACED_METHODS`) at debug level: the
    method, the types of its arguments, then what it answered or raised and how long it took.
    Values are never logged. The instance's own attributes wrap the methods: its class, and
    what the core learns from it, stay as they are."""
    for name in TRACED_METHODS.get(kind, ()):
        method = getattr(inst, name, None)
        if method is None or not callable(method):
            continue

        def traced(*args: Any, _method: Any = method, _name: str = name, **kwargs: Any) -> Any:
            shown = ", ".join([_shape(a) for a in args] + [f"{k}={_shape(v)}" for k, v in kwargs.items()])
            call = f"{kind} {provider_id}.{_name}({shown})"
            log.debug("provider call: %s", call)
            began = time.perf_counter()
            try:
                answer = _method(*args, **kwargs)
            except BaseException as exc:
                took = (time.perf_counter() - began) * 1000
                log.debug("provider call: %s raised %s in %.1f ms", call, type(exc).__name__, took)
                raise
            took = (time.perf_counter() - began) * 1000
            log.debug("provider call: %s -> %s in %.1f ms", call, _shape(answer), took)
            return answer

        setattr(inst, name, traced)


class Plugins:
    """Typed facade over the plugin manager, one per application (``app.extensions["aiimpl"]``).

    A plugin the facade refuses (a registration hook that raises or registers something refused,
    a collision it lost, a blueprint or command hook that raises, or :meth:`refuse`, which the app
    factory calls for a blueprint Flask cannot take) contributes nothing from then on: it is
    unregistered from the plugin manager, and its providers of every kind and the commands it added
    are taken out. Its record stays, so ``aiimpl plugins list`` shows it failed with the reason.
    """

    def __init__(
        self,
        *,
        load_entrypoints: bool = True,
        extra: Iterable[object] = (),
        disabled: Iterable[str] = (),
        trace: bool | None = None,
        strict: bool = True,
    ) -> None:
        """:param trace: log every hook call and provider call at debug level
            (``AIIMPL_TRACE_PLUGINS``); ``None`` reads that setting from the environment, so the
            command line's own facade traces too.
        :param strict: raise :class:`DuplicateProviderError` when two plugins claim one provider id
            or one runner mode (the server must not start: which one runs a job would be a guess);
            with ``strict=False`` the later plugin is only marked failed with the reason (``aiimpl
            plugins list`` shows everything that is installed, then exits non-zero)."""
        self.records: dict[str, PluginRecord] = {}
        disabled = [name.strip() for name in disabled if name.strip()]
        self.pm = make_plugin_manager(load_entrypoints, extra, disabled, self.records)
        #: names ``disabled`` gives that no plugin has (a misspelt one disables nothing)
        known = set(self.records) | {name.rsplit(":", 1)[-1] for name in self.records}
        self.unknown_disabled = sorted(set(disabled) - known)
        #: whether hook calls and provider calls are logged (``AIIMPL_TRACE_PLUGINS``)
        self.trace = _trace_from_environ() if trace is None else trace
        if self.trace:
            _trace_hook_calls(self.pm)
        self.classes: dict[str, dict[str, type[Provider]]] = {kind: {} for kind in KINDS}
        self._owner: dict[tuple[str, str], str] = {}
        self._instances: dict[tuple[str, str], Provider] = {}
        #: the constructor failures logged with their traceback already (kind, id, class, message)
        self._setup_failures: set[tuple[str, str, str, str]] = set()
        #: per plugin, the commands it added: (group, name, command, the one it replaced)
        self._commands: dict[str, list[tuple[click.Group, str, click.Command, click.Command | None]]] = {}
        self.context: ProviderContext | None = None
        #: collisions between plugins (provider ids, runner modes), each naming both plugins
        self.conflicts: list[str] = []
        #: whether a plugin refused after start-up is logged (the command line's own facades, whose
        #: refusals the app factory logs or ``aiimpl plugins list`` prints, say nothing)
        self.log_refusals = True
        self._build_registries()
        if strict and self.conflicts:
            raise DuplicateProviderError("; ".join(self.conflicts))

    # -- calling plugins ----------------------------------------------------------------------

    def _implementers(self, hook_name: str) -> list[str]:
        """The plugins implementing ``hook_name``, in registration order: built-ins, entry points,
        then ``extra``. Not pluggy's order (``get_hookimpls()`` lists ``trylast`` implementations
        first and ``tryfirst`` ones last, and a call runs the list from its end): a plugin marked
        ``tryfirst`` must not take a built-in's id, and the later plugin is the one a collision
        refuses."""
        have = {impl.plugin_name for impl in getattr(self.pm.hook, hook_name).get_hookimpls()}
        return [name for name, plugin in self.pm.list_name_plugin() if plugin is not None and name in have]

    def _call(self, plugin_name: str, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call one plugin's implementation of ``hook_name`` (what it returned, if not ``None``).

        One plugin at a time, so that the core knows who registered what and one plugin's failure
        stays its own; through pluggy, so that tracing sees the call and each implementation is
        passed the arguments it takes.
        """
        others = [plugin for name, plugin in self.pm.list_name_plugin()
                  if plugin is not None and name != plugin_name]
        result: list[Any] = self.pm.subset_hook_caller(hook_name, others)(**kwargs)
        return result

    # -- registries ---------------------------------------------------------------------------

    def _record(self, plugin_name: str) -> PluginRecord:
        return self.records.setdefault(plugin_name, PluginRecord(plugin_name))

    def _build_registries(self) -> None:
        """Call each plugin's registration hooks, plugin by plugin in registration order: a
        collision refuses the later plugin, so a built-in keeps its ids."""
        implementers = {hook: set(self._implementers(hook)) for _kind, hook in REGISTRATION_HOOKS}
        for name, plugin in self.pm.list_name_plugin():
            for kind, hook in REGISTRATION_HOOKS:
                if plugin is None or self.pm.get_plugin(name) is None:
                    break  # blocked, or refused by its previous hook
                if name in implementers[hook]:
                    self._call_register(name, hook, kind)

    def _conflict(self, kind: str, cls: type[Provider], plugin_name: str) -> str | None:
        """Why ``cls`` of ``plugin_name`` collides with what another plugin registered, or ``None``."""
        rec = self._record(plugin_name)
        owner = self._owner.get((kind, cls.id))
        if owner is not None and owner != plugin_name:
            return (f"{kind} provider {cls.id!r} is registered by two plugins: {self._record(owner).who} "
                    f"and {rec.who}")
        mode = getattr(cls, "runner_mode", None) if kind == "runner" else None
        for other_id, other in self.classes["runner"].items() if mode else ():
            if other_id != cls.id and getattr(other, "runner_mode", None) == mode:
                first = self._record(self._owner[("runner", other_id)])
                return (f"runner mode {mode!r} is claimed by backend {other_id!r} ({first.who}) and backend "
                        f"{cls.id!r} ({rec.who})")
        return None

    def _call_register(self, plugin_name: str, hook: str, kind: str) -> None:
        base = KINDS[kind]
        rec = self._record(plugin_name)
        #: why the plugin is refused, kept apart from what its hook raises: a hook that catches
        #: the exception ``register`` raised is refused all the same
        refused: list[str] = []

        def register(cls: type[Provider]) -> None:
            problem = _refusal(cls, base)
            if problem:
                refused.append(f"{hook}: {rec.who} {problem}")
                raise PluginContractError(f"{rec.who} {problem}", plugin=plugin_name)
            conflict = self._conflict(kind, cls, plugin_name)
            if conflict:
                refused.append(conflict)
                self.conflicts.append(conflict)
                raise DuplicateProviderError(conflict)
            self._owner[(kind, cls.id)] = plugin_name
            self.classes[kind][cls.id] = cls
            rec.provides.append({"kind": kind, "id": cls.id, "name": cls.display_name})
            if kind == "runner":
                rec.warnings.extend(_runner_warnings(cls))

        try:
            returned = self._call(plugin_name, hook, register=register)
        except Exception as exc:  # one plugin's failure is reported, not fatal
            refused.append(f"{hook} failed: {_describe_exception(exc)}")
        else:
            if returned:
                rec.warnings.append(
                    f"{hook} returned {type(returned[0]).__name__}, which is ignored: "
                    "call register(cls) with each class instead"
                )
        if refused:
            self._refuse(rec, refused[0])

    def _refuse(self, rec: PluginRecord, error: str) -> None:
        """Mark ``rec`` failed and take out all it contributes: half a plugin is worse than none."""
        rec.error = error
        log.debug("%s: %s", rec.who, error)
        self._take_out(rec)

    def _take_out(self, rec: PluginRecord) -> None:
        """Take out everything the plugin of ``rec`` contributes, whatever was built already: its
        hooks (none is called again), its providers of every kind and the commands it added."""
        if self.pm.get_plugin(rec.name) is not None:
            self.pm.unregister(name=rec.name)
        for (kind, provider_id), owner in list(self._owner.items()):
            if owner == rec.name:
                del self._owner[(kind, provider_id)]
                self.classes[kind].pop(provider_id, None)
                self._instances.pop((kind, provider_id), None)
        rec.provides = []
        for group, name, command, replaced in reversed(self._commands.pop(rec.name, [])):
            if group.commands.get(name) is command:
                if replaced is None:
                    del group.commands[name]
                else:
                    group.commands[name] = replaced

    def bind(self, context: ProviderContext) -> None:
        """Give the facade the context providers are built with (done by the app factory, once per
        application: the plugins' warnings are logged here, their failures by the factory)."""
        self.context = context
        self._instances.clear()
        for rec in self.records.values():
            for warning in rec.warnings:
                log.warning("%s: %s", rec.who, warning)

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
                # so the operator is told where to look; the log has the traceback, once per
                # failure (every poll cycle asks again, and would repeat it)
                seen = (kind, provider_id, type(exc).__name__, str(exc))
                if seen not in self._setup_failures:
                    self._setup_failures.add(seen)
                    log.warning("setting up the %s provider %r failed", kind, provider_id, exc_info=True)
                else:
                    log.debug("setting up the %s provider %r failed again: %s", kind, provider_id,
                              type(exc).__name__)
                raise ProviderError(
                    f"the {kind} provider {provider_id!r} could not be set up ({type(exc).__name__}); "
                    "the orchestrator's log has the details",
                    provider=provider_id,
                ) from exc
            if self.trace:
                _trace_provider_calls(inst, kind, provider_id)
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

    def _set_up(self, kind: str, expected: type[P]) -> list[P]:
        """The providers of ``kind`` that could be set up: one whose constructor fails is left out
        (and logged), so it cannot take the others down with it."""
        out: list[P] = []
        for pid in list(self.classes[kind]):
            try:
                out.append(self._get(kind, pid, expected))
            except ProviderError as exc:
                if exc.__cause__ is None:  # raised by the constructor itself: _get logged nothing
                    log.warning("setting up the %s provider %r failed: %s", kind, pid, exc.message)
        return out

    def runners(self) -> list[RunnerBackend]:
        """The runner backends that could be set up, so that one whose constructor fails cannot
        take the sessions, secrets or gap-fill of the others down with it."""
        return self._set_up("runner", RunnerBackend)

    def trackers(self) -> list[TicketingProvider]:
        """The trackers that could be set up, so that one whose constructor fails cannot take the
        live issue listing of the others down with it."""
        return self._set_up("ticketing", TicketingProvider)

    def runner_for_mode(self, mode: str) -> RunnerBackend | None:
        for pid, cls in self.classes["runner"].items():
            if getattr(cls, "runner_mode", None) == mode:
                return self.runner(pid)
        return None

    def runner_modes(self) -> list[str]:
        return [
            cls.runner_mode
            for cls in self.classes["runner"].values()
            if getattr(cls, "runner_mode", None)
        ]

    def selectable_execution_modes(self) -> list[str]:
        return [
            pid
            for pid, cls in self.classes["runner"].items()
            if getattr(cls, "mapping_selectable", True)
        ]

    def workflow_sync_backends(self) -> list[str]:
        """The runner backends that install workflow files in a repository (*Sync workflows*)."""
        return [pid for pid, cls in self.classes["runner"].items()
                if getattr(cls, "supports_workflow_sync", False)]

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
        """Each loaded plugin's blueprints, with the plugin's name and the options to register them
        with. A plugin whose hook raises is refused, and none of its blueprints is returned."""
        found: list[tuple[str, Blueprint, dict[str, Any]]] = []
        for name in self._implementers("aiimpl_register_blueprints"):
            mine: list[tuple[str, Blueprint, dict[str, Any]]] = []
            try:
                self._call(name, "aiimpl_register_blueprints", register=_blueprint_collector(name, mine))
            except Exception as exc:  # one plugin's failure is reported, not fatal
                self._refuse_late(name, f"aiimpl_register_blueprints failed: {_describe_exception(exc)}")
                continue
            found.extend(mine)
        return found

    def add_commands(self, cli: click.Group) -> None:
        """Let each loaded plugin add its commands to ``cli``. A plugin whose hook raises is
        refused, and the commands it added before it raised are taken out again."""
        for name in self._implementers("aiimpl_register_commands"):
            before = dict(cli.commands)
            try:
                self._call(name, "aiimpl_register_commands", cli=cli)
            except Exception as exc:  # one plugin's failure is reported, not fatal
                cli.commands.clear()
                cli.commands.update(before)
                self._refuse_late(name, f"aiimpl_register_commands failed: {_describe_exception(exc)}")
                continue
            self._commands.setdefault(name, []).extend(
                (cli, command_name, command, before.get(command_name))
                for command_name, command in cli.commands.items()
                if before.get(command_name) is not command
            )

    def refuse(self, plugin_name: str, error: str) -> None:
        """Refuse a plugin from outside the facade (the app factory, for a blueprint Flask cannot
        take): it is marked failed with ``error``, logged, and contributes nothing from then on."""
        self._refuse_late(plugin_name, error)

    def _refuse_late(self, plugin_name: str, error: str) -> None:
        """Refuse a plugin after start-up has logged the failures: this one is logged here."""
        rec = self._record(plugin_name)
        self._refuse(rec, error)
        if self.log_refusals:
            log.error("%s is not loaded: %s", rec.who, error)

    def _notify(self, hook_name: str, **kwargs: Any) -> None:
        for name in self._implementers(hook_name):
            try:
                self._call(name, hook_name, **kwargs)
            except Exception:
                log.exception("plugin %s failed in %s", name, hook_name)

    def job_status_changed(self, job_id: int, issue_key: str, old: JobStatus | None, new: JobStatus,
                           backend: str | None = None) -> None:
        self._notify("aiimpl_job_status_changed", job_id=job_id, issue_key=issue_key, old=old, new=new,
                     backend=backend)

    def issue_stage_changed(self, issue_key: str, old: Stage | None, new: Stage) -> None:
        self._notify("aiimpl_issue_stage_changed", issue_key=issue_key, old=old, new=new)

    # -- reporting ----------------------------------------------------------------------------

    def listing(self) -> list[dict[str, Any]]:
        return [rec.as_dict() for rec in sorted(self.records.values(), key=lambda r: (not r.builtin, r.name))]

    def unknown_disabled_said(self) -> str | None:
        """What is wrong with ``AIIMPL_DISABLED_PLUGINS``: names no installed plugin has."""
        if not self.unknown_disabled:
            return None
        names = ", ".join(self.unknown_disabled)
        return (f"AIIMPL_DISABLED_PLUGINS names {names}, which no installed plugin is called: nothing was "
                "disabled for it (`aiimpl plugins list` shows the names)")

    def failures(self) -> Mapping[str, str]:
        return {name: rec.error for name, rec in self.records.items() if rec.error}

