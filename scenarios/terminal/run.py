"""A run: every trial of every task (``n_attempts`` each), ``n_concurrent`` at a time, each in its own container."""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional

from loopcoder.scenarios.terminal.results import write_run
from loopcoder.scenarios.terminal.tasks import TerminalTask
from loopcoder.scenarios.terminal.trial import TrialRecord, run_trial

BUNDLED = Path(__file__).resolve().parent / "tasks"


def bundled_tasks() -> list[Path]:
    return sorted(p for p in BUNDLED.iterdir() if p.is_dir() and not p.name.startswith("_"))


def run_tasks(tasks: list[TerminalTask], agent_factory: Callable[[], object], output: Path, *, client=None,
              runtime_cfg=None, n_concurrent: int = 1, n_attempts: int = 1,
              progress: Optional[Callable[[str], None]] = None) -> tuple[list[TrialRecord], str]:
    """Run the trials and write the run's files; returns the records (task order) and the summary table.

    ``agent_factory`` makes one agent per trial (agents hold per-trial state such as a model client).
    """
    from loopcoder.runtime.config import load_runtime_config
    from loopcoder.runtime.engine import connect_docker

    if n_concurrent < 1 or n_attempts < 1:
        raise ValueError("n_concurrent and n_attempts must be at least 1")
    client = client or connect_docker()
    runtime_cfg = runtime_cfg or load_runtime_config()
    output.mkdir(parents=True, exist_ok=True)
    run_id = time.strftime("%Y-%m-%d__%H-%M-%S") + "-" + uuid.uuid4().hex[:4]
    jobs = [(task, attempt) for task in tasks for attempt in range(1, n_attempts + 1)]
    started = time.monotonic()

    def one(job):
        task, attempt = job
        return run_trial(task, agent_factory(), output, client, runtime_cfg, attempt=attempt, attempts=n_attempts,
                         run_id=run_id, progress=progress)

    pool = ThreadPoolExecutor(max_workers=n_concurrent, thread_name_prefix="trial")
    try:
        records = list(pool.map(one, jobs))
    except BaseException:
        # Ctrl-C: trials not started are dropped; running ones end with their containers, which the
        # sandboxes' atexit hook removes when this process exits.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    meta = {"run_id": run_id, "agent": records[0].agent if records else None, "n_concurrent": n_concurrent,
            "n_attempts": n_attempts, "seconds": round(time.monotonic() - started, 2),
            "tasks": [str(t.path) for t in tasks]}
    return records, write_run(records, output, meta)
