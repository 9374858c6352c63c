"""Configuration from ``AIIMPL_*`` environment variables.

:data:`SETTINGS` is the one table of the core's variables; ``docs/configuration.md`` and
``aiimpl config`` are generated from it. Plugins declare theirs on their provider classes
(:class:`~aiimpl_core.providers.ConfigVar`); those are read from the environment the same way.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in {"1", "true", "yes", "on"}:
        return True
    if v in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


#: the runner modes, in the reference's order
RUNNER_MODES = ("default", "gha", "fly", "local", "shadow")


def _key_list(value: str) -> tuple[str, ...]:
    """Keys separated by commas (spaces around each are not part of it), each once."""
    return tuple(dict.fromkeys(_list(value)))


def secret_keys(config: Mapping[str, Any]) -> tuple[str, ...]:
    """``AIIMPL_SECRET_KEY``, then its fallbacks (``AIIMPL_SECRET_KEY_FALLBACKS``) but the current
    one again: the keys a run token or a stored secret may have been made with."""
    current = str(config["AIIMPL_SECRET_KEY"])
    # (a value given as text, as create_app's config may give it, is the environment's list)
    fallbacks = secret_strings("AIIMPL_SECRET_KEY_FALLBACKS", config.get("AIIMPL_SECRET_KEY_FALLBACKS"))
    return (current, *(key for key in fallbacks if key != current))


def _runner_mode(value: str) -> str | None:
    mode = value.strip()
    if mode and mode not in RUNNER_MODES:
        # refused at start-up: a mode that is ignored would leave the persisted one in force unseen
        raise ValueError(f"must be one of {', '.join(RUNNER_MODES)}, not {mode!r}")
    return mode or None


#: the shortest retention allowed (0 keeps them for good): a sender may still repeat a delivery of a
#: few days ago (GitHub redelivers deliveries of the last three days)
MIN_RETENTION_DAYS = 7
#: the longest retention (100 years; nothing is older): a much longer one reaches back before the
#: calendar's first year, which no date holds
MAX_RETENTION_DAYS = 36_500
#: the longest duration a setting takes, in seconds (100 years): a window counted back from now, or
#: an expiry forward, much longer than that is no date (and no thread waits that long)
MAX_SECONDS = MAX_RETENTION_DAYS * 86_400
#: the largest count a setting takes (a cap, proxy hops): the database's INTEGER
MAX_COUNT = 2**31 - 1


def _whole_number(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValueError(f"must be a whole number, not {value.strip()!r}") from None


def _at_least(minimum: int, maximum: int = MAX_SECONDS) -> Callable[[str], int]:
    """A parser of a whole number from ``minimum`` to ``maximum`` (a duration of 0 seconds, or less,
    would poll without a pause, expire every token at once or end every session as it starts; one
    of thousands of years is no date)."""

    def parse(value: str) -> int:
        number = _whole_number(value)
        if number < minimum:
            raise ValueError(f"must be at least {minimum}, not {number}")
        if number > maximum:
            raise ValueError(f"must be at most {maximum}, not {number}")
        return number

    return parse


def _retention_days(value: str) -> int:
    days = _whole_number(value)
    if days != 0 and days < MIN_RETENTION_DAYS:
        raise ValueError(f"0 (keep everything) or at least {MIN_RETENTION_DAYS} days")
    if days > MAX_RETENTION_DAYS:
        raise ValueError(f"must be at most {MAX_RETENTION_DAYS} days, not {days}")
    return days


def _backend_caps(value: str) -> dict[str, int]:
    caps: dict[str, int] = {}
    for part in _list(value):
        name, sep, count = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"must be backend=count pairs separated by commas (e.g. "
                             f"fly-machines=10,local-docker=2), not {part!r}")
        try:
            caps[name.strip()] = _at_least(0, MAX_COUNT)(count)
        except ValueError as exc:
            raise ValueError(f"{name.strip()}: {exc}") from None
    return caps


def _http_url(value: str) -> str:
    from .http import http_url_problem

    problem = http_url_problem(value)  # (a URL may carry credentials before its host: never echoed)
    if problem:
        raise ValueError(problem)
    return value.strip()


#: a GitHub App's client ID (``Iv1.…``, ``Iv23li…``), which GitHub takes as its JWT's issuer as well
_CLIENT_ID = re.compile(r"Iv[0-9A-Za-z.]{4,}")


def _app_id(value: str) -> str:
    """A GitHub App's id or client ID (the issuer of its JWT), as its settings page shows them.
    Another value is refused without quoting it (a token put in the wrong variable)."""
    text = value.strip()
    if not ((text.isascii() and text.isdigit()) or _CLIENT_ID.fullmatch(text)):
        raise ValueError("must be the App's id (a number) or its client ID (Iv…), as its settings page "
                         "shows them")
    return text


def not_utf8(text: str) -> bool:
    """Whether ``text`` came from bytes that are no UTF-8 (Python keeps them as lone surrogates, in
    the environment and in command-line arguments): no request, key or URL can carry them."""
    return any("\udc80" <= char <= "\udcff" for char in text)


def _secret_text(value: str) -> str | None:
    """A secret as an operator's file or manifest holds it: the line break after it (and spaces
    around it) are not part of it, as nothing can send them (a sign-in form, GitHub's secret field)."""
    return value.strip() or None


def _bearer_secret(value: str) -> str | None:
    """A secret sent as ``Authorization: Bearer <secret>``, which cannot carry a space or a line
    break: one inside it could never be sent, and every request would be refused."""
    secret = _secret_text(value)
    if secret and any(char.isspace() for char in secret):
        raise ValueError("must not hold spaces or line breaks: it is sent as `Authorization: Bearer "
                         "<secret>`, which cannot carry them")
    return secret


#: the log levels ``AIIMPL_LOG_LEVEL`` takes (any case)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: the line formats ``AIIMPL_LOG_FORMAT`` takes
LOG_FORMATS = ("text", "json")


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, not {value.strip()!r}")
    return level


def _log_format(value: str) -> str:
    fmt = value.strip().lower()
    if fmt not in LOG_FORMATS:
        raise ValueError(f"must be one of {', '.join(LOG_FORMATS)}, not {value.strip()!r}")
    return fmt


@dataclass(frozen=True)
class Setting:
    name: str
    help: str
    default: Any = None
    parse: Callable[[str], Any] = str
    sensitive: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("AIIMPL_DATABASE_URL", "SQLAlchemy database URL: SQLite (3.35 or newer, the library Python "
            "was built with) or PostgreSQL, others are refused at start-up. PostgreSQL in production "
            "(`postgresql+psycopg://user@host/db`).",
            "sqlite:///<instance folder>/aiimpl.db"),
    Setting("AIIMPL_DB_POOL_SIZE", "PostgreSQL: connections each process (a gunicorn worker, a poller, a "
            "CLI command) keeps open for reuse. A gunicorn worker uses at most one per thread at a "
            "time (`AIIMPL_THREADS`) and a few more for webhook checks in the background; see the "
            "operator guide's connection budget against the server's `max_connections`.", 5,
            _at_least(1, 1000)),
    Setting("AIIMPL_DB_MAX_OVERFLOW", "PostgreSQL: connections a process may open beyond "
            "`AIIMPL_DB_POOL_SIZE` at a peak, closed once returned.", 10, _at_least(0, 1000)),
    Setting("AIIMPL_DB_PREPARED", "PostgreSQL: the runner callbacks' statements (each a lookup by key) "
            "are prepared once per connection rather than planned at every run, which halves what "
            "PostgreSQL spends on a progress report. Set to `false` behind a PgBouncer in transaction "
            "mode older than 1.21 or without `max_prepared_statements`, which cannot carry prepared "
            "statements.", True, _bool),
    Setting("AIIMPL_SECRET_KEY", "Signs run tokens (JWT HS256) and admin sessions, and encrypts stored "
            "secrets; every process and host shares it. gunicorn (the production configuration), "
            "`aiimpl poll` and `aiimpl dispatch` refuse to start without it; `aiimpl serve` then "
            "makes up a key for its own process and stores no secret. Use at least 32 random characters "
            "(`openssl rand -hex 32`): a shorter key is warned about at start-up (under gunicorn once, "
            "by its master).", None, sensitive=True),
    Setting("AIIMPL_SECRET_KEY_FALLBACKS", "Earlier values of `AIIMPL_SECRET_KEY`, separated by commas, "
            "kept while the key is changed: run tokens signed with one are still accepted (the runs "
            "dispatched before the change) and stored secrets encrypted with one still read, until "
            "`aiimpl secrets rekey` encrypts them with the current key. What is signed or stored anew uses "
            "`AIIMPL_SECRET_KEY` only; admin sessions signed with an earlier key end. See the operator "
            "guide's key rotation.", None, _key_list, sensitive=True),
    Setting("AIIMPL_ADMIN_ACCESS_CODE", "Access code for the admin UI and API (`POST /api/auth`). "
            "Admin sign-in is refused while unset. Use at least 16 random characters (`openssl rand -hex "
            "16`): sign-in is throttled per client, and gunicorn and `aiimpl serve` warn about a shorter "
            "code as they start. Spaces and line breaks around it are not part of it.", None, _secret_text,
            sensitive=True),
    Setting("AIIMPL_ADMIN_SESSION_SECONDS", "Lifetime of an admin session token.", 43200, _at_least(1)),
    Setting("AIIMPL_PROXY_HOPS", "How many reverse proxies stand in front of the server: their "
            "`X-Forwarded-For`, `-Proto` and `-Host` are trusted (werkzeug's `ProxyFix`), so the sign-in "
            "throttle counts each client, not the proxy. `0` (the default) trusts none: set it only "
            "behind a proxy that overwrites these headers.", 0, _at_least(0, MAX_COUNT)),
    Setting("AIIMPL_HSTS_SECONDS", "`max-age` of the `Strict-Transport-Security` header sent on answers to "
            "HTTPS requests (as they reached the server, or as the proxy's `X-Forwarded-Proto` says where "
            "`AIIMPL_PROXY_HOPS` trusts it). `0` (the default) sends none: the TLS-terminating proxy may.",
            0, _at_least(0)),
    Setting("AIIMPL_PUBLIC_URL", "The URL runners use to reach this orchestrator.", "http://127.0.0.1:8000",
            _http_url),
    Setting("AIIMPL_TRIGGER_SECRET", "Bearer secret of `POST /trigger/gap-fill`; the endpoint answers 501 "
            "while unset (and 502 `dispatch_failed` when no installed runner backend does gap fill: "
            "GitHub Actions does). Spaces and line breaks around it are not part of it; one inside it is "
            "refused at start-up (a bearer token cannot carry it).", None, _bearer_secret, sensitive=True),
    Setting("AIIMPL_METRICS_TOKEN", "Bearer token of `GET /metrics` (Prometheus); the endpoint answers 501 "
            "while unset. Spaces and line breaks around it are not part of it; one inside it is "
            "refused at start-up.", None, _bearer_secret, sensitive=True),
    Setting("AIIMPL_GITHUB_WEBHOOK_SECRET", "Secret of the GitHub webhook (`X-Hub-Signature-256`); spaces "
            "and line breaks around it are not part of it.", None, _secret_text, sensitive=True),
    Setting("AIIMPL_GITHUB_API_URL", "GitHub REST API base URL.", "https://api.github.com", _http_url),
    Setting("AIIMPL_GITHUB_APP_ID", "GitHub App id (App authentication): its number, or its client ID "
            "(`Iv…`), as its settings page shows them.", None, _app_id),
    Setting("AIIMPL_GITHUB_PRIVATE_KEY", "GitHub App private key (PEM text, or a path to a PEM file).", None,
            sensitive=True),
    Setting("AIIMPL_GITHUB_TOKEN", "Personal access token, for small installs without a GitHub App.", None,
            sensitive=True),
    Setting("RUNNER_MODE", "Overrides the persisted runner mode at runtime "
            "(`default`, `gha`, `fly`, `local`, `shadow`; another value is refused at start-up).", None,
            _runner_mode),
    Setting("AIIMPL_POLL_INTERVAL", "Seconds between poll cycles.", 60, _at_least(1)),
    Setting("AIIMPL_SCHEDULER", "Run the poller inside the web process (single-process installs only).",
            False, _bool),
    Setting("AIIMPL_RUN_NOT_FOUND_SECONDS", "A dispatched job with no linked run after this long ends "
            "`timed_out` / `run_not_found`.", 600, _at_least(1)),
    Setting("AIIMPL_WEBHOOK_ANSWER_SECONDS", "How long a tracker webhook (Linear, Jira) waits for the "
            "dispatch check it starts before it answers (at most 60). A check still running then goes "
            "on in the background and the answer says `running`: Linear counts a delivery not answered "
            "within 5 seconds as failed and sends it again, and a dispatch can take longer (a Docker "
            "runner pulling its image). GitHub's merged-PR webhook waits as long for the tracker "
            "writes it queued (its comment, the issue moved to done); slower ones go on after the "
            "answer.", 4, _at_least(1, 60)),
    Setting("AIIMPL_SESSION_LIFETIME_SECONDS", "Lifetime of a session machine or container before it is "
            "stopped (`machine_timeout` / `container_timeout`). Each job keeps the lifetime it was created "
            "with: a change applies to the sessions dispatched after it.", 3600, _at_least(1)),
    Setting("AIIMPL_DEDUP_WINDOW_SECONDS",
            "Window of the `dedup` blocker: a non-terminal job of the issue created within it holds the "
            "issue. An older one still in flight holds it as well (the database keeps one non-terminal "
            "job per issue), so even `0` (no window) never lets an issue have two jobs at once.", 86400,
            _at_least(0)),
    Setting("AIIMPL_GLOBAL_CAP", "Optional cap on non-terminal jobs across all teams (`0`: no cap).", None,
            _at_least(0, MAX_COUNT)),
    Setting("AIIMPL_BACKEND_CAPS", "Optional caps per runner backend, e.g. `fly-machines=10,local-docker=2`; "
            "a backend capped at `0` gets no job (its issues wait, blocked).",
            None, _backend_caps),
    Setting("AIIMPL_RUN_TOKEN_SECONDS", "Lifetime of run tokens (JWT `exp`); never less than a session may "
            "report in: `AIIMPL_RUN_NOT_FOUND_SECONDS` + `AIIMPL_SESSION_LIFETIME_SECONDS` + 10 minutes.",
            10800, _at_least(1)),
    Setting("AIIMPL_RETENTION_DAYS", "Days that delivered tracker writes, handled webhook deliveries and "
            "used run tokens are kept before the poller removes them (hourly; `aiimpl prune` at once). "
            "`0` keeps them for good; otherwise at least 7. Jobs, their steps and transitions are kept. "
            "Admin sign-in failures (after a day) and sign-outs (once their token expired) go whatever "
            "the retention.",
            90, _retention_days),
    Setting("AIIMPL_DISABLED_PLUGINS", "Comma-separated plugin names not to load.", [], _list),
    Setting("AIIMPL_TRACE_PLUGINS", "Log every hook call, with the plugins called and what they "
            "answered, and every call of a provider's methods (the argument and answer types, not their "
            "values, and how long it took), at debug level (with `AIIMPL_LOG_LEVEL=DEBUG`).", False, _bool),
    Setting("AIIMPL_LOG_LEVEL", "Log level: `DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL` (another "
            "value is refused at start-up). The CLI logs warnings and above unless it is set.", "INFO",
            _log_level),
    Setting("AIIMPL_LOG_FORMAT", "Log line format: `text` (UTC time, level, logger, message) or `json` "
            "(one JSON object per line: `time`, `level`, `logger`, `process`, `message`, `exc_info`; "
            "gunicorn's access lines add `remote`, `method`, `path`, `status`, `bytes`, `duration_ms`). "
            "Server, poller and CLI; the session program always logs text.", "text", _log_format),
)

SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}

#: A shorter admin access code is warned about when a server starts: the sign-in throttle counts
#: each client, so many clients at once could guess a short code.
MIN_ACCESS_CODE_LENGTH = 16


#: A shorter AIIMPL_SECRET_KEY is warned about at start-up: a run token any session holds (HS256)
#: lets a short key be guessed offline, and with it every job's tokens and admin sessions forged.
MIN_SECRET_KEY_LENGTH = 32

#: the start-up warnings this process said: a gunicorn master's workers inherit it, and do not
#: say them again (see :func:`secret_key_warning`)
SAID_BEFORE_FORK: set[str] = set()


def secret_key_warning(key: str) -> str | None:
    """What a process says as it starts about an ``AIIMPL_SECRET_KEY`` that is too short, once: the
    warning the first time it is asked for in a process and the workers forked from it (a gunicorn
    master's, said before its workers start, or the app a ``--preload`` master built), else ``None``;
    ``None`` too for a key of at least :data:`MIN_SECRET_KEY_LENGTH` characters."""
    if len(key) >= MIN_SECRET_KEY_LENGTH:
        return None
    warning = (f"AIIMPL_SECRET_KEY has {len(key)} characters: use at least {MIN_SECRET_KEY_LENGTH} random "
               "ones (e.g. the output of `openssl rand -hex 32`)")
    if warning in SAID_BEFORE_FORK:
        return None
    SAID_BEFORE_FORK.add(warning)
    return warning


def access_code_warning(code: str | None) -> str | None:
    """What a server says as it starts about ``AIIMPL_ADMIN_ACCESS_CODE``: that it is unset, or too
    short; ``None`` for a code of at least :data:`MIN_ACCESS_CODE_LENGTH` characters."""
    if not code:
        return ("AIIMPL_ADMIN_ACCESS_CODE is not set: every sign-in to the admin UI and API is refused "
                "until it is")
    if len(code) < MIN_ACCESS_CODE_LENGTH:
        return (f"AIIMPL_ADMIN_ACCESS_CODE has {len(code)} characters: sign-in is throttled per client, "
                f"not across clients; use at least {MIN_ACCESS_CODE_LENGTH} random ones (e.g. the output "
                "of `openssl rand -hex 16`)")
    return None


def load(environ: Mapping[str, str] | None = None, extra_names: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read the core's settings (and ``extra_names``, as strings) from the environment."""
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = env.get(setting.name)
        if raw is None or raw == "":
            out[setting.name] = None if setting.name == "AIIMPL_DATABASE_URL" else setting.default
            continue
        if not_utf8(raw):  # (the value is not said: it may be a secret)
            raise ConfigError(f"{setting.name}: is not UTF-8 text")
        try:
            out[setting.name] = setting.parse(raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{setting.name}: {exc}") from None
    for name in extra_names:
        if env.get(name):
            out[name] = env[name]
    return out


def markdown_table(extra: list[tuple[str, Any]] = ()) -> str:  # type: ignore[assignment]
    """The configuration table for the README and docs."""
    lines = ["| Variable | Default | Sensitive | Meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        # (``0 in (False,)`` holds: a default of 0 is shown, only none, an empty list and False are not)
        default = "" if s.default is None or s.default is False or s.default == [] else f"`{s.default}`"
        lines.append(f"| `{s.name}` | {default} | {'yes' if s.sensitive else ''} | {s.help} |")
    for provider_id, var in extra:
        default = f"`{var.default}`" if var.default else ""
        lines.append(
            f"| `{var.name}` | {default} | {'yes' if var.sensitive else ''} | {var.help} (`{provider_id}`) |"
        )
    return "\n".join(lines)


#: sensitive settings that hold several values separated by commas: each value is masked on its own
SEVERAL_VALUES = frozenset({"AIIMPL_SECRET_KEY_FALLBACKS"})


def secret_strings(name: str, value: Any) -> tuple[str, ...]:
    """The secrets a sensitive setting's value holds, each to be masked on its own: the value as
    read from the environment, or as parsed (a list of keys)."""
    if isinstance(value, str):
        return _key_list(value) if name in SEVERAL_VALUES else ((value,) if value else ())
    if isinstance(value, tuple | list):
        return tuple(item for item in value if isinstance(item, str) and item)
    return ()


def sensitive_names(extra: list[tuple[str, Any]] = ()) -> set[str]:  # type: ignore[assignment]
    names = {s.name for s in SETTINGS if s.sensitive}
    names.update(var.name for _, var in extra if var.sensitive)
    return names
