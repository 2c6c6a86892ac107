"""One SWE-bench instance through the agent: isolated checkout, environment image, sandbox, episode, patch.

Runs wherever an executor puts it (a thread of the batch, or a Ray task on any node with Docker and the
repository sources): it writes only into the instance folder it is given and returns an
``InstanceOutcome``; the batch driver (``runner.py``) turns that into status files and the prediction.
It never raises for a bad instance, repository, image, sandbox or model: the outcome says what failed.

The agent's checkout holds only the base commit's history (``repos.isolated_checkout``: no later commit,
tag or stray object, which would leak the fix through ``git log --all``), the workspace is a
``GitWorkspace`` whose authoritative repository is host-private, and the sandbox runs the instance's
environment image with no network.

With ``sandbox.backend: local`` (runtime config, opt-in ``local.allow``) there is no Docker at all: no image,
and the agent's commands run unconfined on this machine with its own Python and pytest (``LocalSandbox``).
That is for throwaway machines without Docker (docs/nano.md: the held-out table's episodes on the GPU host);
grading stays in Docker (``swebench eval``).
"""
from __future__ import annotations

import os
import shlex
import socket
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from pydantic import BaseModel

from loopcoder.runtime.errors import ImageBuildError, RuntimeFailure, WorkspaceError
from loopcoder.scenarios.swebench.errors import DatasetError, ImageUnavailableError

INSTANCE_FILES = ("trajectory.jsonl", "patch.diff", "summary.txt", "run.log")
State = Literal["done", "failed", "interrupted"]
# Stop reasons that say the episode did not run to a verdict of the model's own: no prediction is
# written, so --resume tries the instance again.
FAILED_STOPS = {"model_error": "model_error", "agent_error": "agent_error"}
EventSink = Callable[[dict], None]


class RunSpec(BaseModel):
    """What every instance of a run shares; plain data, so it travels to Ray workers as it is."""

    run_id: str
    model_name_or_path: str
    agent: dict  # AgentConfig dump (model.url and model.name set by the driver)
    swebench: dict  # SwebenchConfig dump
    runtime: dict  # RuntimeConfig dump
    repos_dir: Optional[str] = None

    def configs(self):
        from loopcoder.agent.config import AgentConfig
        from loopcoder.runtime.config import RuntimeConfig
        from loopcoder.scenarios.swebench.config import SwebenchConfig

        return (AgentConfig.model_validate(self.agent), SwebenchConfig.model_validate(self.swebench),
                RuntimeConfig.model_validate(self.runtime))


class InstanceOutcome(BaseModel):
    """How one instance's episode ended. ``reason``: the agent's stop reason when ``done``, the failure
    (repository_unavailable, image_build_failed, sandbox_failed, bad_instance, model_error, agent_error,
    harness_error) when ``failed``."""

    instance_id: str
    state: State
    reason: str
    detail: str = ""
    steps: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    image: Optional[str] = None
    image_seconds: Optional[float] = None
    patch: str = ""
    patch_files: list[str] = []
    patch_error: Optional[str] = None
    host: str = ""
    pid: int = 0  # the process that ran it (a Ray worker's, or the batch's own)
    started: bool = True  # False: cancelled before it started (not an attempt)
    # Filled only by workers that cannot write into the run folder (Ray): name -> text of INSTANCE_FILES.
    files: dict[str, str] = {}

    @property
    def failure_kind(self) -> str:
        """infrastructure | model | - (for listings)."""
        if self.state != "failed":
            return "-"
        return "model" if self.reason in FAILED_STOPS.values() else "infrastructure"


class _Failed(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, " ".join(str(detail).split())[:600]


class InstanceWorker:
    """Runs instances of one run in this process: configs, a Docker client and an image cache, shared by
    the threads that call ``run`` (image builds of one spec happen once)."""

    def __init__(self, spec: RunSpec, client=None) -> None:
        from loopcoder.scenarios.swebench.images import ImageCache

        self.spec = spec
        self.agent_cfg, self.cfg, self.runtime_cfg = spec.configs()
        self.local = self.runtime_cfg.sandbox.backend == "local"
        if self.local:  # no Docker client, no images (run_swebench refuses images: official here)
            self.client = self.images = None
            return
        if client is None:
            from loopcoder.runtime.engine import connect_docker

            client = connect_docker()
        self.client = client
        self.images = ImageCache(client, self.runtime_cfg.images, self.cfg.images, self.cfg.official_pull_timeout_s)

    def run(self, inst: dict, out_dir: Path, on_event: Optional[EventSink] = None,
            should_stop: Optional[Callable[[], bool]] = None) -> InstanceOutcome:
        """Run the agent on ``inst``; trajectory, patch, summary and run.log go into ``out_dir`` (emptied)."""
        started = time.monotonic()
        iid = inst["instance_id"]
        out_dir = Path(out_dir)
        for name in INSTANCE_FILES:  # a previous attempt's files (--resume); the trajectory is append-only
            (out_dir / name).unlink(missing_ok=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        outcome = InstanceOutcome(instance_id=iid, state="failed", reason="harness_error", host=socket.gethostname(),
                                  pid=os.getpid())
        emit = on_event or (lambda event: None)
        with (out_dir / "run.log").open("a") as log_file:
            def log(line: str) -> None:
                log_file.write(time.strftime("%Y-%m-%d %H:%M:%S ") + line.rstrip("\n") + "\n")
                log_file.flush()

            try:
                self._run(inst, out_dir, outcome, log, emit, should_stop)
            except _Failed as exc:
                outcome.state, outcome.reason, outcome.detail = "failed", exc.reason, exc.detail
            except KeyboardInterrupt:  # a Ray task cancelled outside the agent's loop
                outcome.state, outcome.reason, outcome.detail = "interrupted", "interrupted", "cancelled"
            except Exception as exc:  # noqa: BLE001 -- a bug here must not end the batch; logged in full
                log("harness error:\n" + traceback.format_exc())
                outcome.state, outcome.reason = "failed", "harness_error"
                outcome.detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:600]
            finally:
                outcome.seconds = round(time.monotonic() - started, 3)
                log(f"outcome: {outcome.state} ({outcome.reason})" + (f": {outcome.detail}" if outcome.detail else ""))
        return outcome

    def _run(self, inst: dict, out_dir: Path, outcome: InstanceOutcome, log, emit: EventSink,
             should_stop: Optional[Callable[[], bool]]) -> None:
        from loopcoder.scenarios.swebench.environment import resolve_environment

        iid = inst["instance_id"]
        try:
            env = resolve_environment(inst, self.cfg)
        except DatasetError as exc:
            raise _Failed("bad_instance", str(exc)) from None
        with tempfile.TemporaryDirectory(prefix=f"loopcoder-swebench-{_short(iid)}-") as tmp:
            emit({"kind": "stage", "stage": "checkout"})
            workspace = self._checkout(inst, Path(tmp) / "testbed", log)
            if self.local:
                log("sandbox.backend local: no image; the agent's commands run on this machine, unconfined")
                emit({"kind": "stage", "stage": "sandbox"})
                sandbox = self._local_sandbox(workspace, env)
            else:
                emit({"kind": "stage", "stage": "image"})
                try:
                    image = self.images.get(env, progress=lambda line: log(f"image: {line}"))
                except (ImageBuildError, ImageUnavailableError) as exc:
                    raise _Failed("image_build_failed", str(exc)) from None
                outcome.image, outcome.image_seconds = image.tag, round(image.seconds, 3)
                log(f"image {image.tag} ({'reused' if image.reused else 'ready'} in {image.seconds:.1f} s)")
                emit({"kind": "stage", "stage": "sandbox"})
                sandbox = self._sandbox(workspace, image.tag, iid)
            try:
                self._prepare_sandbox(sandbox, workspace, env, log)
                emit({"kind": "stage", "stage": "agent"})
                self._episode(inst, env, workspace, sandbox, out_dir, outcome, log, emit, should_stop)
            finally:
                sandbox.close()

    def _checkout(self, inst: dict, dest: Path, log):
        from loopcoder.runtime.workspace import GitWorkspace
        from loopcoder.scenarios.swebench.repos import isolated_checkout, repo_source

        run = self.cfg.run
        repos_dir = Path(self.spec.repos_dir) if self.spec.repos_dir else self.cfg.repos_dir
        try:
            source = repo_source(inst, repos_dir, run.clone_url, run.repo_cache, run.clone_timeout_s)
            isolated_checkout(inst, dest, source=source)
            # The private repository is made from the fresh checkout before any sandbox sees it.
            workspace = GitWorkspace(dest, base_commit=inst["base_commit"], config=self.runtime_cfg.workspace)
        except (DatasetError, WorkspaceError) as exc:
            raise _Failed("repository_unavailable", str(exc)) from None
        log(f"checked out {inst['base_commit']} from {source} (only the base commit's history)")
        return workspace

    def _sandbox(self, workspace, image: str, iid: str):
        from loopcoder.runtime.docker_sandbox import DockerSandbox

        sb_cfg = self.runtime_cfg.sandbox.model_copy(update={
            "network": "none", "memory": self.cfg.sandbox_memory, "cpus": self.cfg.sandbox_cpus,
            "pids_limit": self.cfg.sandbox_pids_limit})
        try:
            return DockerSandbox(workspace.path, config=sb_cfg, image=image, run_id=self.spec.run_id,
                                 labels={"loopcoder.purpose": "swebench-run", "loopcoder.instance": iid[:60]},
                                 client=self.client)
        except RuntimeFailure as exc:
            raise _Failed("sandbox_failed", f"cannot start the agent's sandbox: {exc}") from None

    def _local_sandbox(self, workspace, env):
        """A LocalSandbox in the checkout; the spec's environment variables exported in its shell session
        with ``/testbed`` read as the checkout (an image would have set them)."""
        from loopcoder.runtime.local_sandbox import LocalSandbox
        from loopcoder.runtime.sandbox import WORKDIR

        try:
            sandbox = LocalSandbox(workspace.path, config=self.runtime_cfg)
        except RuntimeFailure as exc:
            raise _Failed("sandbox_failed", f"cannot start the agent's sandbox: {exc}") from None
        here = str(Path(workspace.path).resolve())
        exports = " ".join(f"{k}={shlex.quote(v.replace(WORKDIR, here))}" for k, v in (env.spec.env or {}).items())
        if exports:
            run = sandbox.exec(f"export {exports}")
            if run.exit_code != 0:
                sandbox.close()
                raise _Failed("sandbox_failed", f"setting the environment failed: {run.output.strip()[-300:]}")
        return sandbox

    def _prepare_sandbox(self, sandbox, workspace, env, log) -> None:
        """Official images keep a built repository: bring its files (never its .git, which holds the future)
        into the workspace, leave them out of the patch; then the spec's offline pre-test commands."""
        if self.cfg.images == "official":
            from loopcoder.scenarios.swebench.images import OFFICIAL_TESTBED

            copy = sandbox.exec(f"tar -C {OFFICIAL_TESTBED} -cf - --exclude=./.git . | tar -C /testbed -xf - "
                                f"--no-same-owner --no-same-permissions", timeout=900)
            if copy.exit_code != 0:
                raise _Failed("sandbox_failed", f"copying the image's testbed failed: {copy.output.strip()[-300:]}")
            artefacts = workspace.extract_patch().files  # files the image adds to the checkout (builds)
            workspace.config = workspace.config.model_copy(update={
                "exclude_paths": list(workspace.config.exclude_paths) + [_literal_glob(p) for p in artefacts]})
            log(f"copied the image's testbed ({len(artefacts)} file(s) kept out of the patch)")
        for command in env.spec.pre_test or []:
            run = sandbox.exec(command, timeout=900)
            log(f"pre-test `{command}`: exit {run.exit_code}")
            if run.exit_code != 0:
                raise _Failed("sandbox_failed", f"pre-test command `{command}` failed: {run.output.strip()[-300:]}")

    def _episode(self, inst: dict, env, workspace, sandbox, out_dir: Path, outcome: InstanceOutcome, log,
                 emit: EventSink, should_stop) -> None:
        from loopcoder.agent import ModelClient, Task, run_episode
        from loopcoder.scenarios.agent_cli import last_plan, summary_text

        cfg = self.agent_cfg
        price = cfg.price(self.agent_cfg.model.name or "")
        tally = _Tally(emit, price)
        test_command = env.spec.test_cmd if not env.own_eval_script else None
        log(f"agent: model {cfg.model.name} at {cfg.model.url}, mode {cfg.mode}")
        result = run_episode(Task(text=inst["problem_statement"], workspace=workspace,
                                  repo=f"{inst['repo']}@{inst['base_commit']}", test_command=test_command),
                             ModelClient(cfg.model), cfg, out_dir, sandbox=sandbox, listeners=(tally,),
                             should_stop=should_stop)
        (out_dir / "summary.txt").write_text(
            summary_text(result, last_plan(result.trajectory), out_dir, workspace=False) + "\n")
        b = result.budget
        outcome.steps, outcome.tokens_in, outcome.tokens_out = result.steps, b["input_tokens"], b["output_tokens"]
        outcome.cost_usd = float(b.get("cost_usd") or 0.0)
        outcome.detail = " ".join(result.detail.split())[:600]
        patch = result.patch
        outcome.patch_error = patch.error
        outcome.patch_files = list(patch.files)
        outcome.patch = Path(patch.path).read_text() if patch.path and not patch.error else ""
        log(f"episode stopped: {result.reason} after {result.steps} step(s); patch: "
            + (f"error: {patch.error}" if patch.error else f"{len(patch.files)} file(s)"))
        if result.reason == "interrupted":
            outcome.state, outcome.reason = "interrupted", "interrupted"
        elif result.reason in FAILED_STOPS:
            outcome.state, outcome.reason = "failed", FAILED_STOPS[result.reason]
        else:
            outcome.state, outcome.reason = "done", result.reason


class _Tally:
    """Trajectory listener: running totals of one episode, sent to the batch's progress display."""

    def __init__(self, emit: EventSink, price) -> None:
        self.emit, self.price = emit, price
        self.tokens_in = self.tokens_out = 0
        self.phase, self.tool = "-", "-"

    def __call__(self, event: Any) -> None:
        kind = event.type
        if kind == "phase":
            self.phase = event.phase
        elif kind == "tool_call":
            self.tool = event.name or "?"
        elif kind == "model_response":
            self.tokens_in += event.prompt_tokens
            self.tokens_out += event.completion_tokens
            cost = 0.0
            if self.price is not None:
                cost = (self.tokens_in * self.price.input_per_mtok + self.tokens_out * self.price.output_per_mtok) / 1e6
            self.emit({"kind": "step", "step": event.step, "phase": self.phase, "tokens_in": self.tokens_in,
                       "tokens_out": self.tokens_out, "cost_usd": cost})


def _short(iid: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in iid)[:40]


def _literal_glob(path: str) -> str:
    """``path`` as a git glob matching only itself (extract_patch's exclusions are globs)."""
    return "".join(f"[{c}]" if c in "*?[]\\" else c for c in path)


def read_outcome_files(out_dir: Path) -> dict[str, str]:
    """The instance files a remote worker sends back to the driver."""
    return {name: (out_dir / name).read_text(errors="replace") for name in INSTANCE_FILES
            if (out_dir / name).is_file()}


def run_in_scratch(worker: InstanceWorker, inst: dict, on_event: Optional[EventSink] = None,
                   should_stop: Optional[Callable[[], bool]] = None) -> InstanceOutcome:
    """``worker.run`` in a temporary folder whose files come back in ``outcome.files`` (remote workers)."""
    with tempfile.TemporaryDirectory(prefix="loopcoder-swebench-out-") as tmp:
        outcome = worker.run(inst, Path(tmp), on_event, should_stop)
        outcome.files = read_outcome_files(Path(tmp))
    return outcome
