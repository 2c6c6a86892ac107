"""Finding and removing sandbox containers that outlived the process that started them."""
from __future__ import annotations

import socket

from pydantic import BaseModel

from loopcoder.runtime.docker_sandbox import LABEL


class Leftover(BaseModel):
    container_id: str
    name: str
    status: str
    run_id: str
    reason: str
    removed: bool = False


def process_start_time(pid: int) -> str | None:
    """Kernel start time of ``pid`` (field 22 of /proc/PID/stat), to tell a live owner from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat.rsplit(b")", 1)[1].split()[19].decode()


def _owner_alive(labels: dict[str, str]) -> bool:
    try:
        pid = int(labels.get("loopcoder.pid", ""))
    except ValueError:
        return False
    started = process_start_time(pid)
    if started is None:
        return False
    recorded = labels.get("loopcoder.pid_start")
    return not recorded or recorded == started


def find_leftovers(client, everything: bool = False) -> list[Leftover]:
    """Sandbox containers whose owner process is gone (or not running at all); ``everything``: all of them.

    Containers started from another host (label loopcoder.host) are left alone unless ``everything``.
    """
    here = socket.gethostname()
    out = []
    for c in client.api.containers(all=True, filters={"label": LABEL}):
        labels = c.get("Labels") or {}
        name = (c.get("Names") or ["?"])[0].lstrip("/")
        status = c.get("State", "")
        if everything:
            reason = "--all"
        elif status not in ("running", "paused", "restarting"):
            reason = f"not running ({status})"
        elif labels.get("loopcoder.host") != here:
            continue
        elif not _owner_alive(labels):
            reason = f"owner process {labels.get('loopcoder.pid')} is gone"
        else:
            continue
        out.append(Leftover(container_id=c["Id"], name=name, status=status,
                            run_id=labels.get("loopcoder.run", ""), reason=reason))
    return out


def remove_leftovers(client, everything: bool = False, dry_run: bool = False) -> list[Leftover]:
    """Remove what ``find_leftovers`` finds (force, with anonymous volumes); returns the list."""
    from docker.errors import NotFound

    found = find_leftovers(client, everything)
    for item in found:
        if dry_run:
            continue
        try:
            client.api.remove_container(item.container_id, force=True, v=True)
        except NotFound:
            pass  # auto-remove got there first
        item.removed = True
    return found
