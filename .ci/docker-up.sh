#!/usr/bin/env bash
# Makes Docker usable for the test suite (called by .ci/run before `make test`; idempotent, needs root):
#   1. installs docker.io and debootstrap when missing,
#   2. starts dockerd when no engine answers (overlay2; vfs if overlay2 does not come up),
#   3. builds the sandbox base image offline (debootstrap + docker import) when it is absent.
# Exits non-zero when Docker cannot be made usable: in CI the Docker tests must fail, never skip.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG=${DOCKERD_LOG:-/var/log/loopcoder-dockerd.log}

say() { echo "docker-up: $*"; }

engine_up() { docker info >/dev/null 2>&1; }

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u)
fi

start_dockerd() {  # $@: extra dockerd flags; waits up to 60 s for the engine
    say "starting dockerd $* (log: $LOG)"
    # setsid + all fds redirected: the engine outlives this script and holds no pipe of the CI runner.
    setsid dockerd "$@" </dev/null >>"$LOG" 2>&1 &
    for _ in $(seq 60); do
        engine_up && return 0
        kill -0 $! 2>/dev/null || return 1
        sleep 1
    done
    kill $! 2>/dev/null || true
    return 1
}

if engine_up; then
    say "engine already running"
elif ! start_dockerd; then
    say "dockerd did not come up with the default storage driver; retrying with vfs"
    tail -5 "$LOG" || true
    rm -f /var/run/docker.pid
    start_dockerd --storage-driver vfs || { say "FAILED: no Docker engine; see $LOG"; tail -20 "$LOG"; exit 1; }
fi
say "$(docker info --format 'engine {{.ServerVersion}}, storage {{.Driver}}, cgroup {{.CgroupVersion}}')"

make install >/dev/null
.venv/bin/loopcoder sandbox build-base --method debootstrap
