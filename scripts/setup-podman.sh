#!/usr/bin/env bash
# Sets up a Docker-API container engine for the local Docker runner's tests: rootful Podman
# serving the Docker Engine API on a unix socket (see docs/session-image.md).
#
#   scripts/setup-podman.sh ENV_FILE
#
# Idempotent; run as root. Steps, each skipped when already done:
#   1. apt-get install podman, runc and busybox-static;
#   2. /etc/containers/containers.conf: runc as the runtime, ulimits the sandbox can apply;
#   3. image localhost/bbox:latest (busybox only) for the tests' tiny commands;
#   4. image localhost/aiimpl-pytest:py<version>-<hash of its prefix>: busybox plus $PYTHON's
#      interpreter and standard library with the shared libraries they load (copied from the host,
#      ~1 s, no network); the tests mount site-packages and the repository read-only at run time;
#   5. `podman system service` on unix:///tmp/aiimpl-podman.sock in the background, waiting
#      until it answers;
#   6. appends `export DOCKER_HOST=unix:///tmp/aiimpl-podman.sock` to ENV_FILE.
# Prints what it did; exits non-zero with the reason when the engine cannot start.
set -euo pipefail

ENV_FILE=${1:?usage: setup-podman.sh ENV_FILE}
SOCK_PATH=${AIIMPL_PODMAN_SOCKET:-/tmp/aiimpl-podman.sock}
SOCK=unix://$SOCK_PATH
PY=${PYTHON:-python3}
say() { echo "setup-podman: $*"; }
fail() { echo "setup-podman: cannot start the engine: $*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || fail "must run as root (rootful Podman)"

# 1. packages
missing=()
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
[[ -x /bin/busybox ]] || missing+=(busybox-static)
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  apt-get update -qq >/dev/null || fail "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || fail "apt-get install ${missing[*]} failed"
else
  say "podman, runc and busybox already installed"
fi

# 2. engine configuration
CONF=/etc/containers/containers.conf
WANT='[containers]
# the sandbox cannot raise rlimits: podman'"'"'s defaults (nofile 1048576) fail to apply
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
# crun refuses this host'"'"'s hybrid cgroups; runc works
runtime = "runc"'
if [[ -f $CONF ]] && [[ $(cat "$CONF") == "$WANT" ]]; then
  say "$CONF already configured"
else
  mkdir -p /etc/containers
  printf '%s\n' "$WANT" > "$CONF"
  say "wrote $CONF"
fi

# 3. busybox base image (no registry is reachable: images are built locally, named localhost/...)
if podman image exists localhost/bbox:latest; then
  say "image localhost/bbox:latest present"
else
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/tmp" && chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/"
  for tool in sh echo sleep cat env printf true false yes; do ln -sf busybox "$root/bin/$tool"; done
  tar -C "$root" -c . | podman import -q - localhost/bbox:latest >/dev/null || fail "podman import of bbox failed"
  rm -rf "$root"
  say "imported localhost/bbox:latest"
fi

# 4. busybox + the host's Python (interpreter, standard library, shared libraries), tagged with the
# interpreter it holds (its version, and a hash of where it is installed) as the tests name it: a
# test environment of another Python (a second virtual environment) gets an image of its own
python_image() {
  local base=$1 ver=$2 image=$3 root exe
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/tmp" "$root$base/bin" "$root$base/lib" && chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/" && ln -sf busybox "$root/bin/sh"
  exe=$(readlink -f "$base/bin/python$ver")
  cp "$exe" "$root$base/bin/python$ver"
  ln -sf "python$ver" "$root$base/bin/python3" && ln -sf "$base/bin/python3" "$root/bin/python3"
  cp -a "$base"/lib/libpython* "$root$base/lib/" 2>/dev/null || true
  # the standard library without site-packages (mounted at run time) and its test suite
  tar -C "$base/lib" --exclude="python$ver/site-packages" --exclude="python$ver/test" \
      --exclude='__pycache__' -c "python$ver" | tar -C "$root$base/lib" -x
  # every shared library the interpreter and its extension modules load, at the same paths
  { ldd "$exe"; find "$base/lib/python$ver/lib-dynload" -name '*.so' -exec ldd {} \; ; } 2>/dev/null \
    | awk '/=> \//{print $3} /^\t\/.*ld-linux/{print $1}' | sort -u | while read -r lib; do
        mkdir -p "$root$(dirname "$lib")" && cp -L "$lib" "$root$lib"
      done
  [[ -e /lib64 && ! -e $root/lib64 ]] && cp -a /lib64 "$root/lib64" 2>/dev/null || true
  tar -C "$root" -c . | podman import -q - "$image" >/dev/null \
    || fail "podman import of aiimpl-pytest failed"
  rm -rf "$root"
}
if ! base=$("$PY" -c 'import sys; print(sys.base_prefix)' 2>/dev/null); then
  say "no $PY: skipped localhost/aiimpl-pytest"
else
  ver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  image=localhost/aiimpl-pytest:py$ver-$(printf %s "$base" | sha256sum | cut -c1-12)
  if podman image exists "$image"; then
    say "image $image present"
  else
    python_image "$base" "$ver" "$image"
    say "imported $image (Python $ver from $base)"
  fi
fi

# 5. the Docker-API service
answers() { curl -sf --max-time 2 --unix-socket "$SOCK_PATH" http://d/_ping >/dev/null 2>&1; }
# A service started from a checkout that was deleted since (an earlier clean clone's run) still
# answers the ping, but every container start fails ("write child: broken pipe"): it is stopped and
# started again, from /, which no clone's removal takes away.
for old in $(pgrep -f "podman system service --time=0 $SOCK" || true); do
  if [[ $(readlink "/proc/$old/cwd" 2>/dev/null) == *" (deleted)" ]]; then
    say "stopping podman service $old: the directory it was started from was deleted"
    kill "$old" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
  fi
done
if answers; then
  say "podman service already answers on $SOCK"
else
  rm -f "$SOCK_PATH"
  (cd / && exec nohup podman system service --time=0 "$SOCK" >/tmp/aiimpl-podman.log 2>&1) &
  pid=$!
  for _ in $(seq 100); do answers && break; sleep 0.1; done
  answers || fail "podman system service did not answer on $SOCK (see /tmp/aiimpl-podman.log)"
  say "started podman system service (pid $pid) on $SOCK"
fi

# 6. tell the tests where it is
line="export DOCKER_HOST=$SOCK"
touch "$ENV_FILE"
grep -qxF "$line" "$ENV_FILE" || echo "$line" >> "$ENV_FILE"
say "DOCKER_HOST=$SOCK written to $ENV_FILE"
