"""`loopcoder nano teach`: teacher episodes through the real `swebench run` machinery, graded, kept if resolved.

For each episode round k (``--episodes-per-instance``) every instance gets a thinking flag (share
``--thinking-share``, drawn from the seed); instances of one round and flag make one `swebench run` folder
under ``OUT/runs/`` (the real runner: isolated checkout, environment image, Docker sandbox, the real agent
with configs/nano_agent.yaml, ``--model-url`` = the teacher on loopback, ``model.seed`` = the round's seed),
graded with the real evaluation (both verdicts). Run folders are resumed (the runner's ``--resume``), and
predictions already graded are not graded again, so the command can be stopped and started at will.

The dataset: ``OUT/trajectories/<run>/<instance>.jsonl`` (the agent's own trajectory files, copied) for the
resolved episodes only, ``OUT/index.jsonl`` (one line per kept episode) and ``OUT/teach.json`` (counts, the
time per episode). Held-out instances are refused: when the dataset file has a ``heldout.jsonl`` beside it,
no instance id or repository of that file may be taught.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from loopcoder.configs import CONFIG_DIR
from loopcoder.scenarios.swebench.errors import DatasetError

NANO_AGENT_CONFIG = CONFIG_DIR / "nano_agent.yaml"
RESULT_FILE = "result.json"


@dataclass
class RunPlan:
    name: str
    seed: int
    thinking: bool
    instance_ids: list[str]


def _draw(seed: int, *parts: object) -> float:
    digest = hashlib.sha256(":".join(str(p) for p in (seed, *parts)).encode()).hexdigest()
    return int(digest[:12], 16) / float(16 ** 12)


def plan_runs(instances: list[dict], episodes_per_instance: int, thinking_share: float, seed: int) -> list[RunPlan]:
    """The run folders: per round, thinking off and on; instances whose problem statements are equal go into
    separate folders (the teacher tells instances apart by their statement)."""
    plans = []
    for k in range(episodes_per_instance):
        for thinking in (False, True):
            chosen = [i for i in instances if (_draw(seed, "thinking", k, i["instance_id"]) < thinking_share) == thinking]
            groups: list[list[dict]] = []
            for inst in chosen:
                statement = inst["problem_statement"].strip()
                group = next((g for g in groups if all(statement not in o["problem_statement"] and
                                                       o["problem_statement"].strip() not in statement for o in g)),
                             None)
                if group is None:
                    groups.append(group := [])
                group.append(inst)
            for n, group in enumerate(groups):
                name = f"k{k}-{'think' if thinking else 'plain'}" + (f"-{n}" if n else "")
                plans.append(RunPlan(name, seed * 1000 + k * 2 + int(thinking), thinking,
                                     [i["instance_id"] for i in group]))
    return plans


def check_not_heldout(dataset: Path, instances: list[dict], heldout: Optional[Path] = None) -> None:
    """DatasetError when the dataset is a held-out file or shares an instance or repository with ``heldout``
    (default: the ``heldout.jsonl`` beside it): the teacher never sees held-out instances."""
    if "heldout" in dataset.name:
        raise DatasetError(f"{dataset} is a held-out file: the teacher never runs on held-out instances")
    if heldout is not None and not heldout.is_file():
        raise DatasetError(f"held-out file not found: {heldout}")
    heldout = heldout or dataset.parent / "heldout.jsonl"
    if not heldout.is_file() or heldout.resolve() == dataset.resolve():
        return
    ids, repos = set(), set()
    for line in heldout.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            ids.add(row.get("instance_id"))
            repos.add(row.get("repo"))
    clash = [i["instance_id"] for i in instances if i["instance_id"] in ids or i["repo"] in repos]
    if clash:
        raise DatasetError(f"{len(clash)} instance(s) of {dataset} are held out in {heldout} (by id or repository), "
                           f"e.g. {clash[0]}; the teacher never runs on held-out instances")


def teach(dataset: Path, repos_dir: Optional[Path], out: Path, episodes_per_instance: int = 1,
          thinking_share: float = 0.25, workers: int = 1, seed: int = 0, agent_config: Optional[Path] = None,
          overrides: list[str] = (), instance_ids: list[str] = (), limit: Optional[int] = None,
          wrong_edit_share: Optional[float] = None, heldout: Optional[Path] = None, status: Optional[Path] = None,
          keep_ungrounded: bool = False, routine: str = "varied", log=print) -> dict:
    """Run, grade and collect; returns the counts written to ``OUT/teach.json``."""
    from loopcoder.agent import load_agent_config
    from loopcoder.scenarios.nano.teacher import ROUTINES, WRONG_EDIT_SHARE, Teacher
    from loopcoder.scenarios.swebench.dataset import load_dataset

    if not 0.0 <= thinking_share <= 1.0:
        raise DatasetError(f"--thinking-share {thinking_share}: give a share between 0 and 1")
    if routine not in ROUTINES:
        raise DatasetError(f"--routine {routine}: one of {', '.join(ROUTINES)}")
    instances = load_dataset(str(dataset), "test", list(instance_ids) or None)
    check_not_heldout(dataset, instances, heldout)
    if limit is not None:
        instances = instances[:limit]
    out.mkdir(parents=True, exist_ok=True)
    plans = plan_runs(instances, episodes_per_instance, thinking_share, seed)
    by_id = {i["instance_id"]: i for i in instances}
    share = WRONG_EDIT_SHARE if wrong_edit_share is None else wrong_edit_share
    if not 0.0 <= share <= 1.0:
        raise DatasetError(f"--wrong-edit-share {share}: give a share between 0 and 1")
    teacher = Teacher(instances, repos_dir, wrong_edit_share=share, routine=routine).start()
    try:
        for plan in plans:
            if not plan.instance_ids:
                continue
            cfg = load_agent_config(agent_config or NANO_AGENT_CONFIG, list(overrides))
            cfg.model.url, cfg.model.name, cfg.model.seed = teacher.url, teacher.model, plan.seed
            cfg.executor.thinking = cfg.planner.thinking = plan.thinking
            run_dir = out / "runs" / plan.name
            log(f"nano teach: run {plan.name}: {len(plan.instance_ids)} instance(s), seed {plan.seed}, "
                f"thinking {'on' if plan.thinking else 'off'}")
            _run_and_grade(plan, [by_id[i] for i in plan.instance_ids], dataset, run_dir, repos_dir, cfg, workers)
            _write_records(run_dir, teacher, plan)
            counts = build_index(out, status, keep_ungrounded)
            log(f"nano teach: {counts['kept']} resolved episode(s) kept of {counts['graded']} graded so far")
    finally:
        teacher.stop()
    return build_index(out, status, keep_ungrounded)


def _run_and_grade(plan: RunPlan, insts: list[dict], dataset: Path, run_dir: Path, repos_dir: Optional[Path],
                   cfg, workers: int) -> None:
    from loopcoder.runtime.config import load_runtime_config
    from loopcoder.runtime.engine import connect_docker
    from loopcoder.scenarios.swebench.batch import evaluate_batch
    from loopcoder.scenarios.swebench.config import load_swebench_config
    from loopcoder.scenarios.swebench.evaluation import EvalContext
    from loopcoder.scenarios.swebench.rundir import RunDir
    from loopcoder.scenarios.swebench_cli import run_swebench

    rd = RunDir(run_dir)
    resume = rd.exists()
    code = run_swebench(dataset=str(dataset), split="test", instance_ids=plan.instance_ids, pattern=None,
                        workers=workers, resume=resume, output=run_dir, run_id=plan.name, executor="local",
                        ray_address=None, images=None, repos_dir=repos_dir, evaluate=False, agent_cfg=cfg,
                        checkpoint=None, swebench_config=None, swebench_set=[], summary_title=f"teach {plan.name}")
    if code:
        raise KeyboardInterrupt
    preds = rd.predictions()
    swe_cfg = load_swebench_config(None, [])
    ctx = EvalContext(swe_cfg, load_runtime_config(), connect_docker(), run_dir, plan.name,
                      repos_dir=repos_dir.resolve() if repos_dir else None)
    todo = [i for i in insts if i["instance_id"] in preds and not _result_path(ctx, preds[i["instance_id"]]).is_file()]
    if todo:
        evaluate_batch(todo, preds, ctx)


def _result_path(ctx, pred: dict) -> Path:
    return ctx.log_dir(pred.get("model_name_or_path") or "None", pred["instance_id"]) / RESULT_FILE


def _write_records(run_dir: Path, teacher, plan: RunPlan) -> None:
    """What the teacher's policy did in each episode of the run (wrong first edit, recovery, ...)."""
    path = run_dir / "teacher.jsonl"
    old = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            old[row["instance_id"]] = row
    from loopcoder.scenarios.nano.teacher import episode_seed

    for iid in plan.instance_ids:
        record = teacher.records.get((iid, episode_seed(plan.seed, iid)))
        if record is not None:
            old[iid] = record.__dict__ | {"run_seed": plan.seed}
    path.write_text("".join(json.dumps(r) + "\n" for r in old.values()))


def build_index(out: Path, status_file: Optional[Path] = None, keep_ungrounded: bool = False) -> dict:
    """Collect every run folder's graded episodes: copy resolved and grounded trajectories (every name a call
    uses is in its prompt, scenarios/nano/grounding.py; ``keep_ungrounded`` keeps the others too), write
    index.jsonl, teach.json and STATUS.md (also to ``status_file`` when given)."""
    from loopcoder.agent.trajectory import read_trajectory
    from loopcoder.scenarios.swebench.rundir import RunDir

    rows, counts = [], {"graded": 0, "kept": 0, "dropped": {}, "thinking": 0, "wrong_first_edit": 0,
                        "recovered": 0, "instances": 0}
    episode_s, eval_s = [], []
    traj_root = out / "trajectories"
    kept_ids = set()
    for run_dir in sorted((out / "runs").glob("*")):
        rd = RunDir(run_dir)
        meta = rd.read_meta()
        if not meta:
            continue
        records = {}
        if (run_dir / "teacher.jsonl").is_file():
            records = {r["instance_id"]: r for r in map(json.loads, (run_dir / "teacher.jsonl").read_text().splitlines())}
        run_id = meta["run_id"]
        model = meta["model_name_or_path"].replace("/", "__")
        grounding = _GroundingCache(run_dir)
        for status in rd.statuses():
            iid = status.instance_id
            result_file = run_dir / "logs" / "run_evaluation" / run_id / model / iid / RESULT_FILE
            if not result_file.is_file():
                continue
            result = json.loads(result_file.read_text())
            counts["graded"] += 1
            episode_s.append(status.seconds)
            eval_s.append(result.get("seconds") or 0.0)
            if result["status"] != "resolved":
                counts["dropped"][result["status"]] = counts["dropped"].get(result["status"], 0) + 1
                continue
            src = rd.instance_dir(iid) / "trajectory.jsonl"
            events = read_trajectory(src)  # a kept trajectory must read back with the agent's own reader
            missing = grounding.missing(iid, src)
            if missing and not keep_ungrounded:
                counts["dropped"]["ungrounded"] = counts["dropped"].get("ungrounded", 0) + 1
                continue
            dest = traj_root / run_dir.name / f"{rd.instance_dir(iid).name}.jsonl"
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.is_file() or dest.stat().st_size != src.stat().st_size:
                shutil.copyfile(src, dest)
            rec = records.get(iid, {})
            thinking = bool(events[0].config.get("executor", {}).get("thinking"))
            row = {"instance_id": iid, "run": run_dir.name, "seed": rec.get("seed"), "run_seed": rec.get("run_seed"),
                   "thinking": thinking, "steps": status.steps, "resolved": True,
                   "wrong_first_edit": bool(rec.get("wrong_first_edit")), "recovered": bool(rec.get("recovered")),
                   "recovery": rec.get("recovery", ""), "alternative_fix": bool(rec.get("alternative_fix")), "explored": rec.get("explored", []),
                   "test_style": rec.get("test_style", ""), "routine": rec.get("routine", "varied"),
                   "ungrounded": missing, "tokens_in": status.tokens_in, "tokens_out": status.tokens_out, "episode_s": status.seconds,
                   "eval_s": result.get("seconds"), "trajectory": str(dest.relative_to(out))}
            rows.append(row)
            kept_ids.add(iid)
            counts["kept"] += 1
            counts["thinking"] += thinking
            counts["wrong_first_edit"] += row["wrong_first_edit"]
            counts["recovered"] += row["recovered"]
        grounding.save()
    counts["instances"] = len(kept_ids)
    if episode_s:
        counts["episode_s_mean"] = round(sum(episode_s) / len(episode_s), 2)
        counts["eval_s_mean"] = round(sum(eval_s) / len(eval_s), 2)
    counts["updated"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    (out / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "teach.json").write_text(json.dumps(counts, indent=2) + "\n")
    page = status_markdown(counts, rows)
    (out / "STATUS.md").write_text(page)
    if status_file is not None:
        tmp = status_file.with_name(status_file.name + ".tmp")
        tmp.write_text(page)
        tmp.replace(status_file)
    return counts


class _GroundingCache:
    """RUN/grounding.json: what each trajectory's calls named that their prompt lacked, keyed by the file's
    size; read once and written once per run folder."""

    def __init__(self, run_dir: Path):
        self.file = run_dir / "grounding.json"
        self.data = json.loads(self.file.read_text()) if self.file.is_file() else {}
        self.changed = False

    def missing(self, iid: str, trajectory: Path) -> list[str]:
        from loopcoder.scenarios.nano.grounding import ungrounded

        size = trajectory.stat().st_size
        if self.data.get(iid, {}).get("size") != size:
            self.data[iid] = {"size": size, "missing": ungrounded(trajectory)}
            self.changed = True
        return self.data[iid]["missing"]

    def save(self) -> None:
        if self.changed:
            self.file.write_text(json.dumps(self.data, indent=1) + "\n")


def status_markdown(counts: dict, rows: list[dict]) -> str:
    """The dataset's counts as a short Markdown page (``OUT/STATUS.md``)."""
    per_repo: dict[str, int] = {}
    for r in rows:
        repo = r["instance_id"].split(".synth-")[0] if ".synth-" in r["instance_id"] else r["instance_id"].rsplit("-", 1)[0]
        per_repo[repo] = per_repo.get(repo, 0) + 1
    steps = sorted(r["steps"] for r in rows)
    lines = [f"# Nano teacher trajectories ({counts['updated']})", "",
             f"Kept (resolved) episodes: **{counts['kept']}** of {counts['graded']} graded, on {counts['instances']} "
             f"instance(s); dropped: {counts['dropped'] or 'none'}.", "",
             f"- thinking on: {counts['thinking']}; wrong first edit: {counts['wrong_first_edit']}, recovered: "
             f"{counts['recovered']}",
             f"- steps per kept episode: median {steps[len(steps) // 2] if steps else '-'}, "
             f"min {steps[0] if steps else '-'}, max {steps[-1] if steps else '-'}",
             f"- seconds per episode (agent episode in its sandbox): {counts.get('episode_s_mean', '-')}; "
             f"grading: {counts.get('eval_s_mean', '-')}", "",
             "| repository | kept |", "|---|---|"]
    lines += [f"| {repo} | {n} |" for repo, n in sorted(per_repo.items())]
    return "\n".join(lines) + "\n"
