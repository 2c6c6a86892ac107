"""One trial: build the task's image, start its container, run the agent, copy the tests in, run them, grade.

Order and separation, as in the harnesses: the agent works with no tests in the container (none are in the
image unless the task's own Dockerfile copies them); when it returns (or its timeout passes, after which its
tools refuse every call) whatever it left at ``/tests`` and ``/logs/verifier`` is deleted, then the task's
tests are copied to ``/tests`` and run with the task's test timeout, in a fresh environment (the image's
environment and the task's, not the agent's exports) unless a 1.x task asks for ``run_tests_in_same_shell``.
Results go into the trial folder in the task's own generation's format (``results.py``).
"""
from __future__ import annotations

import hashlib
import json
import shlex
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from loopcoder.runtime.errors import RuntimeFailure
from loopcoder.scenarios.terminal.agents import AgentRun
from loopcoder.scenarios.terminal.parsers import PARSERS, ParseError
from loopcoder.scenarios.terminal.tasks import DEFAULT_WORKDIR, TEST_DIR, V1, TerminalTask

VERIFIER_DIR = "/logs/verifier"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CLEAR_TIMEOUT_S = 60.0
Progress = Callable[[str], None]

_build_locks: dict[str, threading.Lock] = {}
_build_locks_guard = threading.Lock()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass
class TrialRecord:
    """Everything a trial produced, in neutral form; results.py writes it in each generation's format."""

    task: TerminalTask
    trial_name: str
    agent: str
    trial_dir: Path
    started_at: str = field(default_factory=now_iso)
    ended_at: Optional[str] = None
    env_started_at: Optional[str] = None
    env_ended_at: Optional[str] = None
    agent_started_at: Optional[str] = None
    agent_ended_at: Optional[str] = None
    test_started_at: Optional[str] = None
    test_ended_at: Optional[str] = None
    agent_run: Optional[AgentRun] = None
    image: Optional[str] = None
    workdir: Optional[str] = None
    warnings: list[str] = field(default_factory=list)
    error: Optional[str] = None  # environment or infrastructure failure (the build, the container, copying)
    error_type: Optional[str] = None
    error_traceback: str = ""
    test_timed_out: bool = False
    test_exit_code: Optional[int] = None
    parser_results: Optional[dict[str, str]] = None  # 1.x
    parse_error: Optional[str] = None  # 1.x
    rewards: Optional[dict[str, float]] = None  # 2.0
    reward_error: Optional[str] = None  # 2.0

    @property
    def failure_mode(self) -> str:
        """terminal-bench's FailureMode value for this trial."""
        if self.error:
            return "unknown"
        if self.test_timed_out:
            return "test_timeout"
        if self.agent_run is not None and self.agent_run.failure != "none":
            return self.agent_run.failure
        if self.parse_error:
            return "parse_error"
        return "none"

    @property
    def resolved(self) -> bool:
        """1.x: every parsed test passed (and at least one test ran); 2.0: reward >= 1."""
        if self.error or self.test_timed_out:
            return False
        if self.task.generation == V1:
            return bool(self.parser_results) and all(v == "passed" for v in self.parser_results.values())
        return bool(self.rewards) and float(self.rewards.get("reward", 0)) >= 1.0

    @property
    def seconds(self) -> dict[str, Optional[float]]:
        def span(a, b):
            if a and b:
                return round((datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds(), 2)
            return None
        return {"environment": span(self.env_started_at, self.env_ended_at),
                "agent": span(self.agent_started_at, self.agent_ended_at),
                "tests": span(self.test_started_at, self.test_ended_at),
                "total": span(self.started_at, self.ended_at)}


def trial_name(task: TerminalTask, attempt: int, attempts: int, run_id: str) -> str:
    """The harnesses' own trial names: 1.x ``<task>.<i>-of-<n>.<run id>``, 2.0 ``<task>__<short id>``."""
    if task.generation == V1:
        return f"{task.name}.{attempt}-of-{attempts}.{run_id}"
    return f"{task.name}__{uuid.uuid4().hex[:7]}"


def task_checksum(task: TerminalTask) -> str:
    """sha256 over the task folder's files (relative names and contents), as a trial result records it."""
    h = hashlib.sha256()
    for path in sorted(p for p in task.path.rglob("*") if p.is_file() and not p.is_symlink()):
        h.update(path.relative_to(task.path).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def build_image(client, task: TerminalTask, images_cfg, progress: Optional[Progress] = None):
    """The task's image (content-hashed and reused); one build per task at a time across threads."""
    from loopcoder.runtime.images import build_dockerfile_image

    with _build_locks_guard:
        lock = _build_locks.setdefault(str(task.path), threading.Lock())
    with lock:
        return build_dockerfile_image(client, task.context, images_cfg, dockerfile=task.dockerfile,
                                      progress=progress)


class BuildTimeout(Exception):
    pass


def build_image_within(client, task: TerminalTask, images_cfg, progress: Optional[Progress] = None):
    """``build_image`` bounded by the task's build timeout. A build past it fails the trial; the engine's
    build itself runs on in a daemon thread (docker-py cannot cancel it) and its result is reused by the
    next run if it completes."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["image"] = build_image(client, task, images_cfg, progress)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            box["error"] = exc

    worker = threading.Thread(target=work, name=f"build-{task.name}", daemon=True)
    worker.start()
    worker.join(task.build_timeout_s)
    if worker.is_alive():
        raise BuildTimeout(f"the task's image was not built within its build timeout ({task.build_timeout_s:g} s)")
    if "error" in box:
        raise box["error"]
    return box["image"]


def _workdir(client, task: TerminalTask, tag: str) -> str:
    """The task's declared working directory; else the Dockerfile's own WORKDIR; else /app."""
    if task.workdir:
        return task.workdir
    if task.dockerfile_sets_workdir:
        wd = (client.api.inspect_image(tag).get("Config") or {}).get("WorkingDir")
        if wd:
            return wd
    return DEFAULT_WORKDIR


def _image_env(client, tag: str) -> dict[str, str]:
    env = {}
    for item in (client.api.inspect_image(tag).get("Config") or {}).get("Env") or []:
        name, _, value = item.partition("=")
        env[name] = value
    return env


def _sandbox_config(base, task: TerminalTask):
    changes: dict[str, Any] = {}
    if task.cpus is not None:
        changes["cpus"] = task.cpus
    if task.memory_mb is not None:
        changes["memory"] = f"{task.memory_mb}m"
    cfg = base.model_copy(update=changes)
    return type(base).model_validate(cfg.model_dump())  # validated again (tmp_size below memory, ...)


def run_trial(task: TerminalTask, agent, out_root: Path, client, runtime_cfg, *, attempt: int = 1,
              attempts: int = 1, run_id: str = "run", progress: Optional[Progress] = None) -> TrialRecord:
    """Run one trial of ``task`` with ``agent``; never raises for a failure of the task or the agent."""
    from loopcoder.runtime.docker_sandbox import DockerSandbox, TaskContainer

    name = trial_name(task, attempt, attempts, run_id)
    rec = TrialRecord(task=task, trial_name=name, agent=agent.name, trial_dir=out_root / task.name / name)
    rec.trial_dir.mkdir(parents=True, exist_ok=False)
    say = progress or (lambda _msg: None)
    sandbox = None
    try:
        rec.env_started_at = now_iso()
        try:
            image = build_image_within(client, task, runtime_cfg.images, progress=lambda m: _build_log(rec, m))
        except BuildTimeout as exc:
            _fail(rec, "EnvironmentBuildTimeoutError", str(exc))
            say(f"{name}: {exc}")
            return rec
        except RuntimeFailure as exc:
            _fail(rec, "EnvironmentBuildError", f"the task's image did not build: {exc}")
            say(f"{name}: environment build failed: {exc}")
            return rec
        rec.image = image.tag
        rec.warnings += image.warnings
        for warning in image.warnings:
            say(f"{task.name}: warning: {warning}")
        rec.workdir = _workdir(client, task, image.tag)
        sandbox = DockerSandbox(
            None, config=_sandbox_config(runtime_cfg.sandbox, task), image=image.tag, client=client,
            run_id=f"tb-{uuid.uuid4().hex[:8]}", labels={"loopcoder.purpose": "terminal", "loopcoder.task": task.name},
            task=TaskContainer(workdir=rec.workdir, network=task.network, env=tuple(task.env.items())))
        prep = sandbox.exec("mkdir -p /logs/agent", timeout=60)
        if prep.exit_code != 0:
            raise RuntimeFailure(f"cannot prepare /logs/agent: {prep.output.strip()[:200]}")
        rec.env_ended_at = now_iso()

        rec.agent_started_at = now_iso()
        deadline = time.monotonic() + task.agent_timeout_s
        try:
            rec.agent_run = agent.perform(task, sandbox, deadline, rec.trial_dir / "agent")
        except Exception as exc:  # noqa: BLE001 - the agent's failure is this trial's, the run goes on
            rec.agent_run = AgentRun("unknown_agent_error", f"{type(exc).__name__}: {exc}")
        rec.agent_ended_at = now_iso()
        _save_text(rec.trial_dir / "panes" / "post-agent.txt", _snapshot(sandbox))

        rec.test_started_at = now_iso()
        _run_tests(task, sandbox, rec, _image_env(client, image.tag))
        rec.test_ended_at = now_iso()
    except RuntimeFailure as exc:
        _fail(rec, type(exc).__name__, str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug here must not end the other trials
        _fail(rec, type(exc).__name__, f"{type(exc).__name__}: {exc}", traceback.format_exc())
    finally:
        if sandbox is not None:
            sandbox.close()
        rec.ended_at = now_iso()
        from loopcoder.scenarios.terminal.results import write_trial

        write_trial(rec)
        say(f"{name}: {'resolved' if rec.resolved else 'unresolved'} ({rec.failure_mode})")
    return rec


def _fail(rec: TrialRecord, kind: str, message: str, tb: str = "") -> None:
    rec.error_type, rec.error, rec.error_traceback = kind, message, tb


def _build_log(rec: TrialRecord, message: str) -> None:
    with open(rec.trial_dir / "build.log", "a", encoding="utf-8") as f:
        f.write(message.rstrip("\n") + "\n")


def _save_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _snapshot(sandbox) -> str:
    """A listing of the working directory after the agent (what a pane capture would show of the result)."""
    try:
        return sandbox.exec("pwd; ls -la", timeout=30).output
    except RuntimeFailure as exc:
        return f"[no snapshot: {exc}]"


def _fresh_env_command(command: str, env: dict[str, str]) -> str:
    """``command`` run by a bash with exactly ``env`` (none of the agent's exports or functions); run it with
    ``env={"PATH": ...}`` so that the agent's PATH cannot hide ``env`` itself."""
    assigns = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
    return f"exec env -i {assigns} bash -c {shlex.quote(command)}"


def _run_tests(task: TerminalTask, sandbox, rec: TrialRecord, image_env: dict[str, str]) -> None:
    # Whatever the agent left where the tests and rewards go is removed first (a planted reward.txt or a fake
    # /tests/run-tests.sh must not count); the removal is checked.
    clear = sandbox.exec(f"for p in {TEST_DIR} {VERIFIER_DIR}; do chmod -R u+rwx $p 2>/dev/null; rm -rf $p; done; "
                         f"! test -e {TEST_DIR} && ! test -e {VERIFIER_DIR}", timeout=CLEAR_TIMEOUT_S)
    if clear.exit_code != 0:
        raise RuntimeFailure(f"cannot clear {TEST_DIR} and {VERIFIER_DIR} before the tests: {clear.output.strip()[:200]}")
    if task.tests_dir is not None:
        sandbox.copy_in(task.tests_dir, TEST_DIR)
    # Docker adds HOME (and PATH when the image has none) at run time; a fresh root shell has them too.
    env = {"HOME": "/root", "PATH": DEFAULT_PATH, **image_env, **task.env, **task.verifier_env}
    if task.generation == V1:
        sandbox.copy_in(task.test_script, f"{TEST_DIR}/run-tests.sh")
        script = f"bash {TEST_DIR}/run-tests.sh"
        same_shell = task.tests_in_same_shell
        command = script if same_shell else _fresh_env_command(script, env)
        res = sandbox.exec(command, timeout=task.test_timeout_s, workdir=rec.workdir,
                           env=env if same_shell else {"PATH": env["PATH"]})
        rec.test_timed_out, rec.test_exit_code = res.timed_out, res.exit_code
        _save_text(rec.trial_dir / "panes" / "post-test.txt", res.output)
        if not res.timed_out:
            try:
                rec.parser_results = PARSERS[task.parser_name](res.output)
            except ParseError as exc:
                rec.parse_error = str(exc)
        return
    script = f"{TEST_DIR}/{task.test_script.relative_to(task.tests_dir).as_posix()}"
    made = sandbox.exec(f"mkdir -p {VERIFIER_DIR} && chmod +x {shlex.quote(script)}", timeout=60)
    if made.exit_code != 0:
        raise RuntimeFailure(f"cannot prepare {VERIFIER_DIR}: {made.output.strip()[:200]}")
    res = sandbox.exec(_fresh_env_command(f"{shlex.quote(script)} > {VERIFIER_DIR}/test-stdout.txt 2>&1", env),
                       timeout=task.test_timeout_s, workdir=rec.workdir, env={"PATH": env["PATH"]})
    rec.test_timed_out, rec.test_exit_code = res.timed_out, res.exit_code
    if res.timed_out:
        return
    verifier_dir = rec.trial_dir / "verifier"
    sandbox.copy_out(VERIFIER_DIR, verifier_dir, overwrite=True, max_bytes=100 << 20)
    rec.rewards, rec.reward_error = read_rewards(verifier_dir)


def read_rewards(verifier_dir: Path) -> tuple[Optional[dict[str, float]], Optional[str]]:
    """Harbor's rule: reward.json (an object of numbers) first, else reward.txt (one number)."""
    import math

    as_json, as_text = verifier_dir / "reward.json", verifier_dir / "reward.txt"
    if as_json.is_file():
        try:
            data = json.loads(as_json.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            return None, f"reward.json is not JSON: {exc}"
        if not isinstance(data, dict) or not data or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in data.values()):
            return None, "reward.json must be an object of finite numbers"
        return {str(k): v for k, v in data.items()}, None
    if as_text.is_file():
        text = as_text.read_text(errors="replace").strip()
        try:
            value = float(text)
        except ValueError:
            return None, f"reward.txt does not hold a number: {text[:80]!r}"
        if not math.isfinite(value):
            return None, f"reward.txt holds a non-finite number: {text[:80]!r}"
        return {"reward": value}, None
    return None, f"no reward file: neither {VERIFIER_DIR}/reward.txt nor reward.json was written"
