#!/bin/sh
# Entrypoint of the session image: runs `aiimpl session run`, then applies the session mode.
#
#   AIIMPL_SESSION_MODE=autonomous   the machine ends with the session (the default)
#   AIIMPL_SESSION_MODE=interactive  the machine stays up after the session for a person to
#                                    attach (fly ssh console / docker exec), until its lifetime
#   AIIMPL_SESSION_MODE=hybrid       it stays up only when the session reported a failure (exit
#                                    1), the one case it keeps its work tree for; not after exit 2
#                                    (a configuration it could not use: nothing was cloned; or a
#                                    result it could not deliver: a success's work tree is gone,
#                                    and the orchestrator, never told, sends nobody to attach)
#
# The lifetime (AIIMPL_LIFETIME_SECONDS, counted from the start of this script) bounds the hold;
# the runner backend also stops a machine past it. The script exits with the session's own exit
# code, so the backend reads the same outcome with or without a hold.
#
# A stop (SIGTERM or SIGINT) while the session runs is passed on to it as SIGTERM, and the session
# saves its work and reports before it exits; there is no hold after a stop. SIGTERM ends a hold
# at once. The session runs in the background for that: in a Docker container this script is
# PID 1, and the kernel drops a signal to a PID 1 without a handler; under Fly's init, the signal
# would end this shell and never reach the session.
# AIIMPL_SESSION_COMMAND replaces `aiimpl session run` (tests, custom images).
set -u
started=$(date +%s)

child=
stopped=no
stop_session() {
  stopped=yes
  if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; fi
}
trap stop_session TERM INT

# As a background job the session starts with SIGINT and SIGQUIT ignored and stdin on /dev/null
# (POSIX): it installs its own SIGTERM and SIGINT handlers and reads nothing from stdin.
# (AIIMPL_SESSION_HOLDER tells the session that a hold may follow it: it keeps its work tree then)
AIIMPL_SESSION_HOLDER=session-entrypoint ${AIIMPL_SESSION_COMMAND:-aiimpl session run} "$@" &
child=$!
if [ "$stopped" = yes ]; then kill -TERM "$child" 2>/dev/null; fi  # a stop before $! was known

# A trapped signal ends `wait` early (status 128 + the signal's number) while the session still
# runs, or is not yet reaped: wait again until it is gone. A shell that reaps children on its own
# (bash) still answers a second `wait` with the session's status.
while :; do
  wait "$child"
  status=$?
  kill -0 "$child" 2>/dev/null || break
done
if [ "$status" -gt 128 ]; then
  wait "$child" 2>/dev/null
  again=$?
  [ "$again" -ne 127 ] && status=$again
fi

# The mode as the session program reads it: white space around it ignored, empty meaning autonomous.
# Another value the session refused (exit 2) before any work: nothing to hold.
mode=${AIIMPL_SESSION_MODE:-}
mode=${mode#"${mode%%[![:space:]]*}"}
mode=${mode%"${mode##*[![:space:]]}"}
mode=${mode:-autonomous}
hold=no
case $mode in
  interactive) hold=yes ;;
  hybrid) [ "$status" -eq 1 ] && hold=yes ;;
  autonomous) ;;
  *) echo "aiimpl-session: unknown AIIMPL_SESSION_MODE '$mode' (autonomous, interactive or hybrid): nothing holds" >&2 ;;
esac
[ "$stopped" = yes ] && hold=no  # the runner is stopping the machine: nobody would attach

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
