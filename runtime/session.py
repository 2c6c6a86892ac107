"""The shell-session protocol shared by DockerSandbox and LocalSandbox.

Every command runs in a fresh ``bash`` (the *job*, ``JOB``) that first restores the session state
(exported variables, shell functions, working directory) saved by the previous command and saves it
again when it ends, so ``cd`` and ``export`` carry over as in one long-lived shell while a timeout can
kill a command's whole process tree without killing the session.

State files. The job writes its state with bash builtins only (no fork, so it works while a command
holds every pid) into the one of two files that does not hold the current state, and ends it with a
sentinel line naming the command. The state counts only when that sentinel is there; otherwise (the
job was killed mid-save, or exited through ``exec``) the previous state stays current and the command's
result says so. A state file is one ``{ ... }`` group that sets ``__lc_ok=1`` last: bash parses a group
whole before running it, so even a damaged file is restored entirely or not at all.

In a container, PID 1 is a *sealed* supervisor (``SUPERVISOR``): an exec-only copy of the image's bash,
which the kernel marks non-dumpable, so processes of the same uid cannot open its ``/proc/PID/fd``,
``environ`` or ``mem`` (nor those of its forks). It reads requests on stdin: ``run <secret> <tag>
<length>`` plus the request, ``kill <tag>``, ``exit``. For each ``run`` it forks a *monitor*
(``monitor``) that starts the job (stdin: the request, then /dev/null), waits for it and prints
``__LOOPCODER_END_<secret> <exit status> <OOM kills> <flags>``. The secret exists only in the host and
in the memory of sealed processes, so a command cannot forge its end line; the job's environment
carries only the *tag* (``LOOPCODER_EXEC``), a different random value used to find its processes.
Flags: ``-`` none, ``s`` the state could not be saved, ``f`` the job could not be started (no free
pid), ``m`` the monitor was killed (by the command) and the supervisor answered for it.

Killing uses only builtins (``kill``, globbing and ``read`` of ``/proc``), so it works even when a fork
bomb holds every pid. With ``keep_background`` off, the end of a command and a ``kill`` stop and kill
every process in the container except the supervisor and its monitor; with it on, a ``kill`` takes
the job's process group and every process whose environment carries the tag. When the host process
dies its attach connection closes, docker closes the supervisor's stdin (``stdin_once``), the
supervisor exits and the container is removed.
"""
from __future__ import annotations

import math
import numbers
import re
import secrets
import shlex
from pathlib import Path

from loopcoder.runtime.errors import SandboxError
from loopcoder.runtime.output import HeadTailBuffer

READY = b"__LOOPCODER_READY__\n"
END_PREFIX = b"__LOOPCODER_END_"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TRAILER = re.compile(rb"(\d{1,3}) (\d{1,10}) (-|[sfm]{1,3})")

# End-line flags.
STATE_NOT_SAVED = "s"
NOT_STARTED = "f"
MONITOR_LOST = "m"

NOTE_STATE_NOT_SAVED = (
    "[loopcoder: the shell state of this command (cd, export, functions) could not be saved; "
    "the previous state was kept]"
)
NOTE_NOT_STARTED = (
    "[loopcoder: the command could not be started: every process slot of the sandbox (pids_limit {limit}) "
    "is in use by background processes]"
)
NOTE_MONITOR_LOST = (
    "[loopcoder: the command killed the sandbox process that supervised it; its processes were killed, "
    "its exit status is unknown and its shell state was not saved]"
)

# The job's save of the session state; runs from its EXIT trap or after the command, builtins only.
_SAVE = r"""
__lc_rc=$?
builtin trap - EXIT DEBUG ERR RETURN
builtin set +eux
for ((__lc_i = 0; __lc_i < ${#__lc_env[@]}; __lc_i += 2)); do
    # Per-command env applies to this command only (unless the command itself changed the value).
    __lc_n=${__lc_env[__lc_i]}
    [[ ${!__lc_n} == "${__lc_env[__lc_i+1]}" ]] || continue
    if [[ -n ${__lc_had[$__lc_n]} ]]; then builtin export "$__lc_n=${__lc_prev[$__lc_n]}"; else builtin unset "$__lc_n"; fi
done
[[ -n $__lc_workdir ]] && builtin cd -- "$__lc_home"
{
    builtin printf '{\n__lc_keep=(\n'
    builtin compgen -e
    builtin printf ')\n'
    builtin declare -px
    builtin declare -f
    builtin printf 'builtin cd -- %q || builtin cd -- "$__lc_root"\n__lc_ok=1\n}\n#__lc_end %s\n' "$PWD" "$__lc_tag"
} >| "$__lc_out"
builtin exit "$__lc_rc"
"""

# One command. stdin: the request (assigns __lc_cmd, __lc_workdir, __lc_env, __lc_root); $1: the state
# file to restore ('' for none), $2: the file to save the state into; LOOPCODER_EXEC: the command's tag.
JOB = r"""
exec 2>&1 3<&-
{ printf 1000 > /proc/self/oom_score_adj; } 2>/dev/null   # the OOM killer takes job processes first
__lc_out=$2 __lc_tag=$LOOPCODER_EXEC __lc_cmd= __lc_workdir= __lc_root=/ __lc_env=()
__lc_save=SAVE_CODE
builtin source /dev/stdin || builtin exit 125
exec </dev/null
[[ -d ${__lc_out%/*} ]] || mkdir -p -m 700 -- "${__lc_out%/*}"   # a command deleted it: save again
if [[ -n $1 ]]; then
    __lc_ok=
    builtin source "$1" 2>/dev/null
    if [[ $__lc_ok == 1 ]]; then
        # Variables unset by an earlier command stay unset: drop exported names the state does not keep.
        declare -A __lc_kept=([LOOPCODER_EXEC]=1)
        for __lc_n in "${__lc_keep[@]}"; do __lc_kept[$__lc_n]=1; done
        __lc_keep=()             # now: the names exported at this point (compgen through a file: no fork)
        builtin compgen -e >| "$__lc_out.names" && builtin mapfile -t __lc_keep < "$__lc_out.names"
        for __lc_n in "${__lc_keep[@]}"; do [[ -n ${__lc_kept[$__lc_n]} ]] || builtin unset "$__lc_n"; done
        builtin export LOOPCODER_EXEC=$__lc_tag   # the state holds the previous command's tag
    else
        builtin printf '%s\n' "[loopcoder: the saved shell state was missing or damaged; this command starts from a fresh shell]"
    fi
    builtin unset __lc_kept __lc_keep __lc_ok
fi
builtin set --
declare -A __lc_prev=() __lc_had=()
__lc_home=$PWD
builtin trap -- '{ builtin eval "$__lc_save"; } 2>/dev/null' EXIT
if [[ -n $__lc_workdir ]]; then builtin cd -- "$__lc_workdir" || builtin exit 1; fi
for ((__lc_i = 0; __lc_i < ${#__lc_env[@]}; __lc_i += 2)); do
    __lc_n=${__lc_env[__lc_i]}
    if [[ -v $__lc_n ]]; then __lc_had[$__lc_n]=1; __lc_prev[$__lc_n]=${!__lc_n}; fi
    builtin export "$__lc_n=${__lc_env[__lc_i+1]}"
done
builtin unset __lc_i __lc_n
builtin eval "$__lc_cmd"
{ builtin eval "$__lc_save"; } 2>/dev/null
""".replace("SAVE_CODE", shlex.quote(_SAVE))

# Container main process, run by the sealed bash as PID 1. $1: 1 to let a command's background
# processes outlive it. The JOB text comes in the environment (__LC_JOB) and is taken out of it before
# any job exists. Builtins only after start-up; its own stderr goes nowhere, so nothing it says (fork
# retries, job notices) can mix into a command's output.
SUPERVISOR = r"""
JOB=$__LC_JOB
unset __LC_JOB
# Sealed means this binary is unreadable to us (so the kernel made us non-dumpable); never run unsealed.
[[ -r $BASH ]] && { echo "loopcoder: $BASH is readable, so the supervisor would not be sealed"; exit 1; }
KEEP_BACKGROUND=$1
LC_ALL=C                         # read -N and ${#x} count bytes; not exported, so jobs keep their locale
RUN=/tmp/.loopcoder
mkdir -p -m 700 "$RUN" || exit 1
exec {KFD}<> <(:) || exit 1      # kill requests, main -> monitor; a pipe only sealed processes hold
exec {ZFD}<> <(:) || exit 1      # never written: read -t on it is a sleep without a fork
OOM=
for f in /sys/fs/cgroup/memory/memory.oom_control /sys/fs/cgroup/memory.events; do
    [[ -r $f ]] && { OOM=$f; break; }
done
PIDS=
for d in /sys/fs/cgroup/pids /sys/fs/cgroup; do
    [[ -r $d/pids.max && -r $d/pids.current ]] && { PIDS=$d; break; }
done
oom_count() {
    oomv=0
    [[ -n $OOM ]] || return 0
    local k v
    while read -r k v; do [[ $k == oom_kill ]] && oomv=$v; done < "$OOM"
}
room() {                         # at least $1 more processes fit under the pids limit
    local pmax pcur
    [[ -n $PIDS ]] && read -r pmax < "$PIDS/pids.max" && read -r pcur < "$PIDS/pids.current" || return 0
    [[ $pmax == max ]] || (( pcur + $1 <= pmax ))
}
kill_all() {                     # every process but PID 1, the caller and $1; $2=1: until all are reaped
    local p n pass
    for pass in 1 2 3; do        # STOP first: a stopped process forks no more
        n=0
        for p in /proc/[0-9]*; do
            p=${p#/proc/}
            (( p == 1 || p == BASHPID || p == $1 )) || { kill -STOP "$p"; n=1; }
        done
        (( n )) || return 0      # nobody else is left
    done
    for pass in {1..200}; do     # killed processes hold their pid until reaped (PID 1 reaps orphans)
        n=0
        for p in /proc/[0-9]*; do
            p=${p#/proc/}
            (( p == 1 || p == BASHPID || p == $1 )) || { kill -KILL "$p" && n=1; }
        done
        (( n && $2 )) || return 0
        read -t 0.01 -u "$ZFD"
    done
}
tag_kill() {                     # $1 tag, $2 monitor: the job's process group and every process with the tag
    local p s f e jp= pass
    for pass in 1 2 3; do
        for p in /proc/[0-9]*; do
            [[ $p == /proc/1 || $p == "/proc/$BASHPID" || $p == "/proc/$2" ]] && continue
            read -r s < "$p/stat" || continue
            f=(${s##*") "})      # state ppid pgrp ...
            if [[ -n $2 && ${f[1]} == "$2" ]]; then jp=${p#/proc/}; kill -STOP -- "-$jp"; fi
            if [[ -n $jp && ${f[2]} == "$jp" ]]; then kill -STOP "${p#/proc/}"; kill -KILL "${p#/proc/}"; continue; fi
            while IFS= read -r -d '' e; do
                if [[ $e == "LOOPCODER_EXEC=$1" ]]; then kill -STOP "${p#/proc/}"; kill -KILL "${p#/proc/}"; break; fi
            done < "$p/environ"
        done
    done
    [[ -n $jp ]] && kill -KILL -- "-$jp"
}
stop_job() {                     # $1 tag, $2 monitor
    if [[ $KEEP_BACKGROUND == 1 ]]; then tag_kill "$1" "$2"; else kill_all "$2" 0; fi
}
state_saved() {                  # $1 state file, $2 tag: the job wrote it to the end (its sentinel is last)
    local l last=
    [[ -f $1 && ! -h $1 ]] || return 1
    while IFS= read -r l; do last=$l; done < "$1"
    [[ $last == "#__lc_end $2" ]]
}
monitor() {                      # $1 secret, $2 tag, $3 state to restore ('' none), $4 state file to write
    local o0 rc pid flags=- st=0
    trap - $SIGNALS              # the job gets default signal handling
    set -m                       # and its own process group
    oom_count; o0=$oomv
    LOOPCODER_EXEC=$2 bash --noprofile --norc /dev/fd/3 "$3" "$4" <<<"$REQ" 3<<<"$JOB" {KFD}<&- {ZFD}<&- 2>&1 &
    pid=$!
    read -t 0 -u "$KFD" && stop_job "$2" "$BASHPID"   # a kill that came before the job existed
    while :; do
        wait "$pid"; rc=$?
        kill -0 "$pid" || break
        read -t 0.01 -u "$ZFD"   # stopped, not ended
    done
    [[ $KEEP_BACKGROUND == 1 ]] || kill_all 0 1
    oom_count
    state_saved "$4" "$2" || { st=1; flags=s; }
    printf '__LOOPCODER_END_%s %d %d %s\n' "$1" "$rc" "$((oomv - o0))" "$flags"
    exit "$st"
}
answer() { printf '__LOOPCODER_END_%s %d %d %s\n' "$SECRET" "$1" 0 "$2"; }
reap() {                         # the monitor ended: adopt the state it vouched for; $1=1: answer if it died first
    local st
    wait "$mon"; st=$?
    mon= KILLED=
    (( st == 0 )) && cur=$nxt
    (( st > 1 && $1 )) || return 0
    if [[ $KEEP_BACKGROUND == 1 ]]; then tag_kill "$TAG" ""; else kill_all 0 1; fi
    answer 137 m
}
start() {
    # A new run comes only after the previous answer; its monitor exits right after printing it.
    if [[ -n $mon ]]; then kill -CONT "$mon"; reap 0; fi
    while read -t 0 -u "$KFD"; do read -r -N 1 -u "$KFD" _; done   # kills that came after their command
    nxt=1; [[ $cur == 1 ]] && nxt=0
    if ! room 2; then answer 126 f; return; fi
    monitor "$SECRET" "$TAG" "${cur:+$RUN/state.$cur}" "$RUN/state.$nxt" &
    mon=$!
}
# Signals from inside the container reach PID 1 only when it handles them, and bash handles these
# (it would exit): ignore them. Signals that PID 1 does not handle are dropped by the kernel.
SIGNALS="HUP INT QUIT ILL TRAP ABRT BUS FPE USR1 SEGV USR2 PIPE ALRM TERM XCPU XFSZ VTALRM SYS"
trap '' $SIGNALS
# No job control here (set -m): bash 5.2 with it dies of SIGALRM in `read -t` when a child stops.
exec 2>/dev/null
printf '__LOOPCODER_READY__\n'
mon= cur= nxt= SECRET= TAG= KILLED= line=
while :; do
    if [[ -n $mon ]]; then       # poll: notice a monitor the command killed, and one stuck after a kill
        if ! kill -0 "$mon"; then reap 1; continue; fi
        read -r s < "/proc/$mon/stat" && [[ ${s##*") "} == T* ]] && kill -CONT "$mon"   # stopped by the command
        [[ -n $KILLED ]] && (( ${EPOCHREALTIME/./} - KILLED > 5000000 )) && kill -KILL "$mon"
        IFS= read -r -t 0.05 part
    else
        IFS= read -r part
    fi
    rc=$?
    line+=$part
    (( rc > 128 )) && continue   # timed out: keep the partial line
    (( rc == 0 )) || exit 0      # stdin closed: the host is gone
    if [[ $line =~ ^run\ ([0-9a-f]{32})\ ([0-9a-f]{16})\ ([0-9]{1,10})$ ]]; then
        SECRET=${BASH_REMATCH[1]} TAG=${BASH_REMATCH[2]} n=${BASH_REMATCH[3]} REQ=
        while (( ${#REQ} < n )); do
            IFS= read -r -N "$(( n - ${#REQ} ))" part; rc=$?
            REQ+=$part
            (( rc == 0 || rc > 128 )) || exit 0
        done
        start
    elif [[ $line =~ ^kill\ ([0-9a-f]{16})$ && -n $mon && ${BASH_REMATCH[1]} == "$TAG" ]]; then
        printf x >&"$KFD"        # seen by the monitor if its job did not exist yet
        stop_job "$TAG" "$mon"
        kill -CONT "$mon"
        KILLED=${EPOCHREALTIME/./}
    elif [[ $line == exit ]]; then
        exit 0
    fi
    line=
done
"""

# The container's command line: the supervisor text stays out of ``ps`` and ``pkill -f`` patterns.
BOOT = 's=$__LC_SUPERVISOR; unset __LC_SUPERVISOR; eval "$s"'


def new_secret() -> str:
    """The end-line secret of one command: 128 random bits, sent only to the sealed supervisor."""
    return secrets.token_hex(16)


def new_tag() -> str:
    """The kill tag of one command (LOOPCODER_EXEC in its environment); not a secret."""
    return secrets.token_hex(8)


def check_timeout(timeout: object) -> float:
    """``timeout`` as seconds: a finite number > 0, else SandboxError (checked before anything is sent)."""
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise SandboxError(f"timeout must be a number of seconds, not {timeout!r}")
    value = float(timeout)
    if not math.isfinite(value) or value <= 0:
        raise SandboxError(f"timeout must be a finite number of seconds > 0, not {timeout!r}")
    return value


def render_request(command: str, workdir: str | None, env: dict[str, str] | None, root: str) -> str:
    """Bash assignments the job sources: the command, its one-off workdir and environment, the root."""
    if "\x00" in command:
        raise SandboxError("command contains a NUL byte; bash cannot run it")
    pairs: list[str] = []
    for name, value in (env or {}).items():
        if not _NAME.fullmatch(name):
            raise SandboxError(f"bad environment variable name {name!r}: use letters, digits and _")
        if "\x00" in value:
            raise SandboxError(f"environment variable {name} contains a NUL byte")
        pairs += [shlex.quote(name), shlex.quote(value)]
    return (
        f"__lc_cmd={shlex.quote(command)}\n"
        f"__lc_workdir={shlex.quote(workdir or '')}\n"
        f"__lc_env=({' '.join(pairs)})\n"
        f"__lc_root={shlex.quote(root)}\n"
    )


def state_file_saved(path: Path, tag: str) -> bool:
    """True when the job wrote ``path`` to the end: its last line is the sentinel of command ``tag``."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(f.tell() - 256, 0))
            tail = f.read()
    except OSError:
        return False
    return tail.endswith(b"\n#__lc_end " + tag.encode() + b"\n")


def add_notes(output: str, notes: list[str]) -> str:
    """``output`` with one line per note appended (after a newline of its own if it lacks one)."""
    if not notes:
        return output
    sep = "" if not output or output.endswith("\n") else "\n"
    return output + sep + "\n".join(notes) + "\n"


class EndMarkerReader:
    """Feeds a byte stream into a HeadTailBuffer until the end line of one secret appears.

    Holds back only len(marker) bytes between chunks, so memory stays bounded by the output cap. What
    follows the marker must be ``<exit status> <OOM kills> <flags>\\n`` exactly; anything else raises
    SandboxError (the supervisor is the only writer that knows the secret, so it is broken).
    """

    def __init__(self, secret: str, capture: HeadTailBuffer) -> None:
        self.marker = END_PREFIX + secret.encode() + b" "
        self.capture = capture
        self._pending = b""
        self._trailer: bytes | None = None
        self.exit_code: int | None = None
        self.oom_kills = 0
        self.flags = ""

    @property
    def done(self) -> bool:
        return self.exit_code is not None

    def feed(self, data: bytes) -> None:
        if self.done:
            return
        if self._trailer is not None:
            self._trailer += data
        else:
            buf = self._pending + data
            idx = buf.find(self.marker)
            if idx < 0:
                keep = len(self.marker) - 1
                cut = max(len(buf) - keep, 0)
                self.capture.feed(buf[:cut])
                self._pending = buf[cut:]
                return
            self.capture.feed(buf[:idx])
            self._pending = b""
            self._trailer = buf[idx + len(self.marker):]
        line, sep, _ = self._trailer.partition(b"\n")
        if sep:
            m = _TRAILER.fullmatch(line)
            if m is None:
                shown = line[:40].decode("ascii", "replace")
                raise SandboxError(f"sandbox session sent a malformed end line ({shown!r}); start a new sandbox")
            self.exit_code, self.oom_kills = int(m[1]), int(m[2])
            self.flags = "" if m[3] == b"-" else m[3].decode()
        elif len(self._trailer) > 32:
            raise SandboxError("sandbox session sent a malformed end line (too long); start a new sandbox")

    def flush_pending(self) -> None:
        """On a dead stream: what was held back is output too."""
        self.capture.feed(self._pending)
        self._pending = b""
