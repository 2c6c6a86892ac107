"""`swebench run`'s driver: which instances still need a run, status files, predictions, live progress.

The executor (``executors.py``) runs instances; everything it reports comes back here, to one thread, which
writes every status file and every prediction (``rundir.py`` says in which order, and why that makes a
resumed run lose and duplicate nothing). Ctrl-C asks the executor to stop its episodes (each stops as
``interrupted`` at its next model call and gets no prediction), keeps what finished meanwhile, and
re-raises; a second Ctrl-C leaves at once. Either way ``--resume`` picks up every instance without a
prediction.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from loopcoder.scenarios.swebench.episode import InstanceOutcome
from loopcoder.scenarios.swebench.rundir import InstanceStatus, RunDir, now

GRACE_S = 120.0  # after Ctrl-C: how long running episodes get to stop and close their sandboxes


@dataclass
class BatchSummary:
    statuses: dict[str, InstanceStatus]
    skipped: list[str]  # already had a prediction (--resume)
    counts: Counter = field(default_factory=Counter)
    interrupted: bool = False

    @property
    def failures(self) -> Counter:
        return Counter(s.reason for s in self.statuses.values() if s.state == "failed")


def run_batch(instances: list[dict], model_name_or_path: str, run_dir: RunDir, executor,
              display: Optional["RunDisplay"] = None) -> BatchSummary:
    """Run every instance of ``instances`` that has no prediction yet in ``run_dir``; returns the states."""
    preds = run_dir.predictions(repair=True)
    todo = [i for i in instances if i["instance_id"] not in preds]
    skipped = [i["instance_id"] for i in instances if i["instance_id"] in preds]
    statuses: dict[str, InstanceStatus] = {}
    for inst in todo:
        iid = inst["instance_id"]
        old = run_dir.read_status(iid)
        status = InstanceStatus(instance_id=iid, state="pending", attempt=old.attempt if old else 0)
        run_dir.write_status(status)
        statuses[iid] = status
    display = display or RunDisplay(len(instances), len(skipped), quiet=True)
    summary = BatchSummary(statuses, skipped)
    if not todo:
        return summary

    def handle(item) -> None:
        if item[0] == "event":
            _, iid, event = item
            status = statuses.get(iid)
            if status is None or status.state not in ("pending", "running"):
                return  # Ray may deliver a task's last events after its result
            if status.state == "pending":
                status.state, status.attempt, status.started_at = "running", status.attempt + 1, now()
                status.finished_at, status.reason, status.detail = None, "", ""
            if event.get("kind") == "stage" and event.get("stage") != status.stage:
                status.stage = event["stage"]
                run_dir.write_status(status)
            elif event.get("kind") == "step":
                status.steps, status.tokens_in, status.tokens_out = event["step"], event["tokens_in"], event["tokens_out"]
                status.cost_usd = event.get("cost_usd", 0.0)
            display.update(status)
            return
        outcome: InstanceOutcome = item[1]
        status = statuses[outcome.instance_id]
        _finish(run_dir, status, outcome, model_name_or_path)
        summary.counts[status.state] += 1
        display.finished(status)

    with display:
        executor.start(todo)
        try:
            while executor.busy():
                for item in executor.poll(0.25):
                    handle(item)
                display.tick()
        except KeyboardInterrupt:
            summary.interrupted = True
            display.note("interrupted: stopping the running episodes (Ctrl-C again to leave at once)")
            executor.cancel()
            deadline = time.monotonic() + GRACE_S
            while executor.busy() and time.monotonic() < deadline:
                for item in executor.poll(0.25):
                    handle(item)
                display.tick()
        finally:
            executor.close()
    for status in statuses.values():
        if status.state in ("pending", "running"):  # never came back within the grace period
            status.state, status.reason, status.finished_at = "interrupted", "interrupted", now()
            run_dir.write_status(status)
            summary.counts["interrupted"] += 1
    return summary


def _finish(run_dir: RunDir, status: InstanceStatus, outcome: InstanceOutcome, model: str) -> None:
    """Files, then the status, then (for a finished episode) the prediction line: the commit point."""
    folder = run_dir.instance_dir(outcome.instance_id)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in outcome.files.items():  # from a remote worker
        (folder / name).write_text(text)
    if status.started_at is None and outcome.started:  # its start event never came (Ray delivers them late)
        status.attempt += 1
        status.started_at = now()
    status.state, status.reason, status.detail = outcome.state, outcome.reason, outcome.detail
    status.failure_kind = outcome.failure_kind
    status.stage = ""
    status.finished_at = now()
    status.seconds, status.steps = outcome.seconds, outcome.steps
    status.tokens_in, status.tokens_out, status.cost_usd = outcome.tokens_in, outcome.tokens_out, outcome.cost_usd
    status.image, status.patch_files, status.patch_error = outcome.image, outcome.patch_files, outcome.patch_error
    status.host, status.pid = outcome.host, outcome.pid
    status.prediction = outcome.state == "done"
    run_dir.write_status(status)
    if outcome.state == "done":
        run_dir.append_prediction({"instance_id": outcome.instance_id, "model_name_or_path": model,
                                   "model_patch": outcome.patch})


class RunDisplay:
    """Live progress on a terminal (bar, done / running / failed, tokens, cost, ETA) and one line per
    finished instance; on a pipe or in a log only those lines."""

    def __init__(self, total: int, already: int, console: Optional[Console] = None, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.quiet = quiet
        self.total, self.already = total, already
        self.live_mode = not quiet and self.console.is_terminal
        self.running: dict[str, InstanceStatus] = {}
        self.finished_n = 0
        self.states: Counter = Counter()
        self.tokens_in = self.tokens_out = 0
        self.cost = 0.0
        self.started = time.monotonic()
        self.bar = Progress(TextColumn("[bold]instances"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=self.console)
        self.task = self.bar.add_task("run", total=total, completed=already)
        self.live: Optional[Live] = None

    def __enter__(self) -> "RunDisplay":
        if self.live_mode:
            self.live = Live(self.render(), console=self.console, refresh_per_second=4, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
            self.live = None

    def update(self, status: InstanceStatus) -> None:
        self.running[status.instance_id] = status

    def finished(self, status: InstanceStatus) -> None:
        self.running.pop(status.instance_id, None)
        self.finished_n += 1
        self.states[status.state] += 1
        self.tokens_in += status.tokens_in
        self.tokens_out += status.tokens_out
        self.cost += status.cost_usd
        self.bar.update(self.task, advance=1)
        if not self.quiet:
            self.console.print(self.line(status), highlight=False)
        self.tick()

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, highlight=False)

    def tick(self) -> None:
        if self.live is not None:
            self.live.update(self.render())

    def eta(self) -> str:
        left = self.total - self.already - self.finished_n
        if left <= 0:
            return "0s"
        if not self.finished_n:
            return "-"
        per = (time.monotonic() - self.started) / self.finished_n  # finished instances per wall second so far
        return _duration(per * left)

    def render(self):
        tin = self.tokens_in + sum(s.tokens_in for s in self.running.values())
        tout = self.tokens_out + sum(s.tokens_out for s in self.running.values())
        cost = self.cost + sum(s.cost_usd for s in self.running.values())
        done = self.already + self.states["done"]
        line = Text(f"done {done}  running {len(self.running)}  failed {self.states['failed']}"
                    + (f"  interrupted {self.states['interrupted']}" if self.states["interrupted"] else "")
                    + f"  |  tokens in {tin:,} out {tout:,}  ${cost:.4f}  |  ETA {self.eta()}", style="cyan")
        rows = [self.bar, line]
        for s in list(self.running.values())[:8]:
            rows.append(Text(f"  {s.instance_id}: {s.stage or 'starting'}"
                             + (f", step {s.steps}, tokens {s.tokens_in + s.tokens_out:,}" if s.steps else ""),
                             style="dim"))
        return Group(*rows)

    def line(self, s: InstanceStatus) -> str:
        n = self.already + self.finished_n
        head = f"[{n}/{self.total}] {_printable(s.instance_id)}: "
        if s.state == "done":
            patch = f"{len(s.patch_files)} file(s)" if s.patch_files else ("error" if s.patch_error else "empty")
            return (head + f"[green]done[/] ({_printable(s.reason)}) {s.steps} steps, tokens {s.tokens_in:,}/"
                    f"{s.tokens_out:,}, ${s.cost_usd:.4f}, {s.seconds:.1f} s, patch {patch}")
        if s.state == "failed":
            return head + f"[red]failed[/] ({s.failure_kind}: {_printable(s.reason)}) {_printable(s.detail[:160])}"
        return head + f"[yellow]{s.state}[/]" + (f" ({_printable(s.detail)})" if s.detail else "")


def _printable(text: str) -> str:
    from loopcoder.scenarios.agent_cli import printable

    return printable(text)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
