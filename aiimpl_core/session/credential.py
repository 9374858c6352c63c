"""The git credential helper of the session: ``python -m aiimpl_core.session.credential get``.

Git asks it for a password before every network operation. It answers with the newest cached
repository token that is still valid for a while, and otherwise asks ``/api/token`` for a fresh
one (GitHub App installation tokens live one hour; a push after a long agent run needs a new
one), waiting out an orchestrator that cannot be reached for a while (see :func:`orchestrator`).
The token reaches git only through this helper's standard output: it is never written
to ``.git/config``, a remote URL or a log.

Configured per git command through ``GIT_CONFIG_COUNT`` environment variables (see
:func:`git_environment`), so the clone's configuration never mentions it.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from . import env as session_env

if TYPE_CHECKING:
    from .api import Orchestrator

USERNAME = "x-access-token"  # what GitHub expects with an installation token


#: the ``protocol://host[:port]`` the helper answers for (the clone's): a remote the repository's
#: configuration points elsewhere is never sent the token
HOST_VAR = "AIIMPL_CREDENTIAL_HOST"


def git_environment(base: Mapping[str, str], cache_path: str, clone_url: str | None = None) -> dict[str, str]:
    """``base`` plus what makes git use this helper (and only it) without prompting; with
    ``clone_url``, the helper answers only for that URL's protocol and host."""
    out = dict(base)
    if clone_url:
        parts = urlsplit(clone_url)
        out[HOST_VAR] = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
    helper = f"!{shlex.quote(sys.executable)} -m aiimpl_core.session.credential"
    # an empty value first clears helpers from system/global configuration (a stored password
    # from elsewhere must not win over the job's token)
    entries = [("credential.helper", ""), ("credential.helper", helper)]
    count = int(out.get("GIT_CONFIG_COUNT", "0") or 0)
    for offset, (key, value) in enumerate(entries):
        out[f"GIT_CONFIG_KEY_{count + offset}"] = key
        out[f"GIT_CONFIG_VALUE_{count + offset}"] = value
    out["GIT_CONFIG_COUNT"] = str(count + len(entries))
    out["GIT_TERMINAL_PROMPT"] = "0"
    out.pop("GIT_ASKPASS", None)
    out.pop("SSH_ASKPASS", None)
    out[session_env.CREDENTIAL_CACHE.name] = cache_path
    return out


def orchestrator(environ: Mapping[str, str]) -> Orchestrator:
    """The helper's client of ``/api/token``. It rides out an outage of the orchestrator (a
    deploy) as the session's own calls do, for ``AIIMPL_REPORT_RETRY_SECONDS``; the git command
    it runs in bounds it too: the session ends that command's process group, this helper with
    it, at the budget's end (or the end of the time left to save the work) and on a stop."""
    from .api import RESULT_PATIENCE, Orchestrator
    from .redact import Redactor

    try:
        patience = float(max(0, int(environ.get(session_env.REPORT_RETRY_SECONDS.name) or RESULT_PATIENCE)))
    except ValueError:
        patience = RESULT_PATIENCE  # the session refuses such a setting before any git command
    # the URL and the nonce as the session reads them (a value from a file may end with a line break)
    url, nonce = environ[session_env.URL.name].strip(), environ[session_env.NONCE.name].strip()
    return Orchestrator(url, nonce, {}, Redactor(), needed_patience=patience)


def answer(environ: Mapping[str, str]) -> str:
    """The helper's answer to ``get``: ``username=…`` and ``password=…`` lines."""
    from .token_cache import TokenCache

    cache = TokenCache(environ[session_env.CREDENTIAL_CACHE.name])
    margin = float(
        environ.get(session_env.TOKEN_REFRESH_SECONDS.name)
        or session_env.TOKEN_REFRESH_SECONDS.default
        or 300
    )
    token = cache.current(margin)
    if token is None:
        client = orchestrator(environ)
        owner = environ[session_env.REPOSITORY.name].split("/", 1)[0]
        # a token GitHub refused is named: the orchestrator would otherwise hand back its cached copy
        token = client.repository_token(owner, refused=cache.last_refused())
        cache.add(token)  # the session learns it from here (redaction, reuse)
    return f"username={USERNAME}\npassword={token.token}\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    operation = argv[0] if argv else ""
    # git sends the request on stdin; it must be read even when unused
    request = dict(line.split("=", 1) for line in sys.stdin.read().splitlines() if "=" in line)
    if session_env.CREDENTIAL_CACHE.name not in os.environ:
        return 0
    if operation == "erase" and request.get("password"):
        # GitHub refused this token (revoked, expired early): the next "get" fetches a new one
        from .token_cache import TokenCache

        TokenCache(os.environ[session_env.CREDENTIAL_CACHE.name]).discard(request["password"])
        return 0
    if operation != "get":
        return 0  # "store": the orchestrator owns the tokens
    expected = os.environ.get(HOST_VAR)
    asked = f"{request.get('protocol', '')}://{request.get('host', '')}"
    if expected and asked != expected:
        # a remote the repository's configuration (or the agent) pointed elsewhere
        sys.stderr.write(f"aiimpl credential helper: no token for {asked} (the job's repository is on "
                         f"{expected})\n")
        return 0
    try:
        sys.stdout.write(answer(os.environ))
    except Exception as exc:  # noqa: BLE001 - git reports the missing credentials itself
        # only the class name: the message of a failed call could name the URL or worse
        sys.stderr.write(
            f"aiimpl credential helper: could not get a repository token ({type(exc).__name__})\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
