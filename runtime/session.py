"""The shell-session protocol shared by DockerSandbox and LocalSandbox.

Every command runs in a fresh ``bash`` (the *job*) that first restores the session state (exported
variables, shell functions, working directory) saved by the previous command and saves it again on
exit, so ``cd`` and ``export`` carry over as in one long-lived shell while a timeout can kill a
command's whole process tree without killing the session.

In a container a small supervisor (``SUPERVISOR``, bash builtins only) is the main process. It reads
requests on stdin, runs each job in its own process group and answers with an end marker carrying
the exit status and the OOM-kill count. Killing uses only builtins (``kill``, ``read`` of
``/proc/*/environ``), so it works even when a fork bomb has used up the pids limit. Every process of a
job carries ``LOOPCODER_EXEC=<nonce>`` in its environment (forks copy it), so children that left the
process group are found too. When the host process dies its attach connection closes, docker closes
the supervisor's stdin (``stdin_once``), the supervisor exits and the container is removed.
"""
from __future__ import annotations

import re
import secrets
import shlex

from loopcoder.runtime.errors import SandboxError
from loopcoder.runtime.output import HeadTailBuffer

READY = b"__LOOPCODER_READY__\n"
END_PREFIX = b"__LOOPCODER_END_"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# One command. $1: request file (assigns __lc_cmd, __lc_workdir, __lc_env, __lc_root), $2: state file.
JOB = r"""
exec </dev/null 2>&1
{ printf 1000 > /proc/self/oom_score_adj; } 2>/dev/null   # the OOM killer takes job processes first
source "$1" || exit 125
__lc_state=$2
if [[ -r $__lc_state ]]; then
    # Variables unset by an earlier command stay unset: drop exported names the state does not keep.
    __lc_keep=()
    source "$__lc_state"
    declare -A __lc_kept=()
    for __lc_n in "${__lc_keep[@]}"; do __lc_kept[$__lc_n]=1; done
    while IFS= read -r __lc_n; do
        [[ -n ${__lc_kept[$__lc_n]} || $__lc_n == LOOPCODER_EXEC ]] || unset "$__lc_n"
    done < <(compgen -e)
    unset __lc_kept __lc_n __lc_keep
fi
__lc_home=$PWD
if [[ -n $__lc_workdir ]]; then cd -- "$__lc_workdir" || exit 1; fi
declare -A __lc_prev=() __lc_had=()
for ((__lc_i = 0; __lc_i < ${#__lc_env[@]}; __lc_i += 2)); do
    __lc_n=${__lc_env[__lc_i]}
    if [[ -v $__lc_n ]]; then __lc_had[$__lc_n]=1; __lc_prev[$__lc_n]=${!__lc_n}; fi
    export "$__lc_n=${__lc_env[__lc_i+1]}"
done

__lc_save() {
    local rc=$? i n
    # Per-command env applies to this command only (unless the command itself changed the value).
    for ((i = 0; i < ${#__lc_env[@]}; i += 2)); do
        n=${__lc_env[i]}
        [[ ${!n} == "${__lc_env[i+1]}" ]] || continue
        if [[ -n ${__lc_had[$n]} ]]; then export "$n=${__lc_prev[$n]}"; else unset "$n"; fi
    done
    [[ -n $__lc_workdir ]] && cd -- "$__lc_home" 2>/dev/null
    {
        printf '__lc_keep=('
        while IFS= read -r n; do [[ $n == LOOPCODER_EXEC ]] || printf '%q ' "$n"; done < <(compgen -e)
        printf ')\n'
        while IFS= read -r n; do
            [[ $n == LOOPCODER_EXEC ]] || printf 'export %s=%q\n' "$n" "${!n}"
        done < <(compgen -e)
        while IFS=' ' read -r _ _ n; do [[ $n == __lc_* ]] || declare -f "$n"; done < <(declare -F)
        printf 'cd -- %q 2>/dev/null || cd -- "$__lc_root" 2>/dev/null\n' "$PWD"
    } > "$__lc_state" 2>/dev/null
    exit "$rc"
}
trap __lc_save EXIT
unset __lc_i __lc_n
eval "$__lc_cmd"
"""

# Container main process (under tini). $1: the JOB script text; $2: 1 to let a command's background
# processes outlive it. Builtins only after start-up.
SUPERVISOR = r"""
exec 2>&1
KEEP_BACKGROUND=$2
LC_ALL=C                       # read -N counts bytes; not exported, so jobs keep their locale
RUN=/tmp/.loopcoder
mkdir -p "$RUN" || exit 1
printf '%s' "$1" > "$RUN/job.sh"
OOM=
for f in /sys/fs/cgroup/memory/memory.oom_control /sys/fs/cgroup/memory.events; do
    [[ -r $f ]] && { OOM=$f; break; }
done
oom_count() {
    oomv=0
    [[ -n $OOM ]] || return 0
    local k v
    while read -r k v; do [[ $k == oom_kill ]] && oomv=$v; done < "$OOM"
}
monitor() {                     # $1 nonce; the job gets its own process group
    exec 2>/dev/null            # job-control notices of this subshell are noise (jobs send stderr to stdout)
    set -m
    local o0 rc pid
    oom_count; o0=$oomv
    LOOPCODER_EXEC=$1 bash --noprofile --norc "$RUN/job.sh" "$RUN/request" "$RUN/state" 2>&1 &
    pid=$!
    printf '%s' "$pid" > "$RUN/jobpid"
    while :; do                 # wait also returns when the job is stopped (kill_job stops before killing)
        wait "$pid"; rc=$?
        kill -0 "$pid" 2>/dev/null || break
    done
    [[ $KEEP_BACKGROUND == 1 ]] || kill_job "$1"
    oom_count
    : > "$RUN/jobpid"
    printf '__LOOPCODER_END_%s %d %d\n' "$1" "$rc" "$((oomv - o0))"
}
kill_job() {                    # $1 nonce: stop then kill the job's group and every process marked with it
    local jp= p e pass
    read -r jp < "$RUN/jobpid" 2>/dev/null
    [[ -n $jp ]] && kill -STOP -- "-$jp" 2>/dev/null
    for pass in 1 2 3; do
        for p in /proc/[0-9]*; do
            while IFS= read -r -d '' e; do
                if [[ $e == "LOOPCODER_EXEC=$1" ]]; then kill -STOP "${p#/proc/}"; kill -KILL "${p#/proc/}"; break; fi
            done < "$p/environ"
        done 2>/dev/null
    done
    [[ -n $jp ]] && kill -KILL -- "-$jp" 2>/dev/null
}
set -m
printf '__LOOPCODER_READY__\n'
while IFS=' ' read -r op a b; do
    case $op in
        run)  IFS= read -r -N "$b" req || exit 0
              printf '%s' "$req" > "$RUN/request"
              monitor "$a" & ;;
        kill) kill_job "$a" ;;
        exit) exit 0 ;;
    esac
done
"""


def new_nonce() -> str:
    return secrets.token_hex(8)


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


class EndMarkerReader:
    """Feeds a byte stream into a HeadTailBuffer until the end marker of one nonce appears.

    Holds back only len(marker) bytes between chunks, so memory stays bounded by the output cap.
    """

    def __init__(self, nonce: str, capture: HeadTailBuffer) -> None:
        self.marker = END_PREFIX + nonce.encode() + b" "
        self.capture = capture
        self._pending = b""
        self._trailer: bytes | None = None
        self.exit_code: int | None = None
        self.oom_kills = 0

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
            rc, _, oom = line.decode(errors="replace").partition(" ")
            self.exit_code = int(rc)
            self.oom_kills = int(oom or 0)
        elif len(self._trailer) > 64:
            raise SandboxError("sandbox session answered garbage after its end marker; start a new sandbox")

    def flush_pending(self) -> None:
        """On a dead stream: what was held back is output too."""
        self.capture.feed(self._pending)
        self._pending = b""
