"""Where a batch's instances run: threads of this process (``local``) or Ray tasks (``ray``).

Both hand the driver the same two kinds of items through ``poll``: ``("event", instance_id, dict)``
(an instance started a stage or a model step: progress) and ``("outcome", InstanceOutcome)``. The driver
alone writes status files and predictions, so there is one writer whatever runs the instances, and at
most ``workers`` instances are in flight (the rest wait in the driver, still ``pending``).

``local``: one ``InstanceWorker`` (Docker client, image cache) shared by ``workers`` threads, each
writing its instance's files straight into the run folder. Cancelling sets a flag the agents read before
every model call, so running episodes stop as ``interrupted`` at their next step.

``ray``: each instance is a Ray task (``run.ray_num_cpus`` CPUs) that runs the same ``InstanceWorker`` in a
scratch folder on its node and returns the files with its outcome, so the run folder needs no shared
file system. Progress events reach the driver through a small actor. Without ``--ray-address`` a local
Ray is started with ``workers`` CPUs (a few seconds); with one, the cluster's nodes need Docker, this
package installed, and the model URL reachable. Cancelling is ``ray.cancel`` (a KeyboardInterrupt in the
task, which the agent records as ``interrupted``).
"""
from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

from loopcoder.configs import ConfigError
from loopcoder.scenarios.swebench.episode import InstanceOutcome, InstanceWorker, RunSpec, run_in_scratch

Item = tuple


class LocalExecutor:
    name = "local"

    def __init__(self, spec: RunSpec, workers: int, instance_dir: Callable[[str], Path], client=None) -> None:
        self.worker = InstanceWorker(spec, client=client)
        self.workers = workers
        self.instance_dir = instance_dir
        self.items: queue.Queue = queue.Queue()
        self.cancelled = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="swebench")
        self.in_flight = 0

    def start(self, instances: list[dict]) -> None:
        for inst in instances:
            self.in_flight += 1
            self.pool.submit(self._run, inst)

    def _run(self, inst: dict) -> None:
        iid = inst["instance_id"]
        if self.cancelled.is_set():
            self.items.put(("outcome", InstanceOutcome(instance_id=iid, state="interrupted", reason="interrupted",
                                                       detail="cancelled before it started", started=False)))
            return
        outcome = self.worker.run(inst, self.instance_dir(iid), lambda e: self.items.put(("event", iid, e)),
                                  self.cancelled.is_set)
        self.items.put(("outcome", outcome))

    def busy(self) -> bool:
        return self.in_flight > 0

    def poll(self, timeout: float) -> list[Item]:
        out = []
        try:
            out.append(self.items.get(timeout=timeout))
            while True:
                out.append(self.items.get_nowait())
        except queue.Empty:
            pass
        self.in_flight -= sum(1 for item in out if item[0] == "outcome")
        return out

    def cancel(self) -> None:
        self.cancelled.set()

    def close(self) -> None:
        self.cancelled.set()
        self.pool.shutdown(wait=True, cancel_futures=False)


class RayExecutor:
    name = "ray"

    def __init__(self, spec: RunSpec, workers: int, address: Optional[str] = None, num_cpus: float = 1.0,
                 init: Optional[dict] = None) -> None:
        try:
            import ray
        except ImportError:  # pinned in pyproject.toml; a trimmed install may lack it
            raise ConfigError("--executor ray needs the ray package (pip install ray==2.60.0)") from None
        self.ray = ray
        self.spec_json = spec.model_dump_json()
        self.workers = workers
        self.num_cpus = num_cpus
        self.started_ray = False
        if not ray.is_initialized():
            env = {}
            key_env = spec.agent.get("model", {}).get("api_key_env")
            if key_env and os.environ.get(key_env):
                env[key_env] = os.environ[key_env]  # remote nodes need the key the driver was given
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "runtime_env": {"env_vars": env} if env else None}
            if address:
                kwargs["address"] = address
            else:
                kwargs["num_cpus"] = max(1, int(workers * num_cpus + 0.999))
            kwargs.update(init or {})
            try:
                ray.init(**{k: v for k, v in kwargs.items() if v is not None})
            except Exception as exc:  # noqa: BLE001 -- ConnectionError, RuntimeError, ValueError...: one line
                raise ConfigError(f"cannot start or reach Ray{f' at {address}' if address else ''}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
            self.started_ray = True
        self.board = ray.remote(num_cpus=0)(_Board).remote()
        self.task = ray.remote(num_cpus=num_cpus, max_retries=0)(_ray_instance)
        self.waiting: list[dict] = []
        self.refs: dict[Any, str] = {}
        self.unstarted: list[InstanceOutcome] = []  # cancelled before submission, reported by the next poll

    def start(self, instances: list[dict]) -> None:
        self.waiting.extend(instances)
        self._submit()

    def _submit(self) -> None:
        while self.waiting and len(self.refs) < self.workers:
            inst = self.waiting.pop(0)
            self.refs[self.task.remote(self.spec_json, inst, self.board)] = inst["instance_id"]

    def busy(self) -> bool:
        return bool(self.refs or self.waiting or self.unstarted)

    def poll(self, timeout: float) -> list[Item]:
        ray = self.ray
        out: list[Item] = [("outcome", o) for o in self.unstarted]
        self.unstarted = []
        ready, _ = ray.wait(list(self.refs), num_returns=len(self.refs), timeout=timeout) if self.refs else ([], [])
        out += [("event", iid, event) for iid, event in ray.get(self.board.drain.remote())]
        for ref in ready:
            iid = self.refs.pop(ref)
            out.append(("outcome", self._outcome(ref, iid)))
        self._submit()
        return out

    def _outcome(self, ref, iid: str) -> InstanceOutcome:
        ray = self.ray
        try:
            return InstanceOutcome.model_validate(ray.get(ref))
        except ray.exceptions.TaskCancelledError:
            return InstanceOutcome(instance_id=iid, state="interrupted", reason="interrupted", detail="cancelled")
        except ray.exceptions.RayError as exc:  # the worker died (node lost, OOM): an infrastructure failure
            return InstanceOutcome(instance_id=iid, state="failed", reason="worker_failed",
                                   detail=" ".join(str(exc).split())[:600])

    def cancel(self) -> None:
        self.unstarted += [InstanceOutcome(instance_id=inst["instance_id"], state="interrupted", reason="interrupted",
                                           detail="cancelled before it started", started=False) for inst in self.waiting]
        self.waiting = []
        for ref in list(self.refs):
            try:
                self.ray.cancel(ref)
            except Exception:  # noqa: BLE001 -- already finished, or a put() placeholder
                pass

    def close(self) -> None:
        if self.started_ray:
            self.ray.shutdown()


class _Board:
    """Ray actor: progress events from the tasks, drained by the driver."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def push(self, instance_id: str, event: dict) -> None:
        self.events.append((instance_id, event))

    def drain(self) -> list[tuple[str, dict]]:
        out, self.events = self.events, []
        return out


_WORKERS: dict[str, InstanceWorker] = {}
_WORKERS_LOCK = threading.Lock()


def _ray_instance(spec_json: str, inst: dict, board) -> dict:
    """One instance as a Ray task: the same worker as the local executor, in a scratch folder."""
    spec = RunSpec.model_validate_json(spec_json)
    with _WORKERS_LOCK:  # a Ray worker process runs many tasks: keep its Docker client and image cache
        worker = _WORKERS.get(spec.run_id)
        if worker is None:
            worker = _WORKERS[spec.run_id] = InstanceWorker(spec)
    iid = inst["instance_id"]
    return run_in_scratch(worker, inst, lambda event: board.push.remote(iid, event)).model_dump()
