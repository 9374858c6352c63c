#!/bin/sh
# Entrypoint of the session image: runs `aiimpl session run`, then applies the session mode.
#
#   AIIMPL_SESSION_MODE=autonomous   the machine ends with the session (the default)
#   AIIMPL_SESSION_MODE=interactive  the machine stays up after the session for a person to
#                                    attach (fly ssh console / docker exec), until its lifetime
#   AIIMPL_SESSION_MODE=hybrid       it stays up only when the session failed
#
# The lifetime (AIIMPL_LIFETIME_SECONDS, counted from the start of this script) bounds the hold;
# the runner backend also stops a machine past it. The script exits with the session's own exit
# code, so the backend reads the same outcome with or without a hold. SIGTERM ends a hold at once.
# AIIMPL_SESSION_COMMAND replaces `aiimpl session run` (tests, custom images).
set -u
started=$(date +%s)

${AIIMPL_SESSION_COMMAND:-aiimpl session run} "$@"
status=$?

mode=${AIIMPL_SESSION_MODE:-autonomous}
hold=no
case $mode in
  interactive) hold=yes ;;
  hybrid) [ "$status" -ne 0 ] && hold=yes ;;
  autonomous) ;;
  *) echo "aiimpl-session: unknown AIIMPL_SESSION_MODE '$mode', treated as autonomous" >&2 ;;
esac

if [ "$hold" = yes ]; then
  lifetime=${AIIMPL_LIFETIME_SECONDS:-3600}
  remaining=$((lifetime - ($(date +%s) - started)))
  if [ "$remaining" -gt 0 ]; then
    trap 'exit "$status"' TERM INT  # before saying so: a stop may follow at once
    echo "aiimpl-session: session mode $mode: session exited with $status; staying up ${remaining}s for a person to attach" >&2
    sleep "$remaining" &
    wait $!
  fi
fi
exit "$status"
