"""The folder of a `swebench run`: its settings, its predictions, one status file per instance.

```
run.json                      what was run (dataset, model, run id, selection, configs); --resume checks it
preds.jsonl                   official predictions, one line per finished instance (the commit point)
instances/<id>/status.json    pending | running | done | failed | interrupted, with steps, tokens, cost, time
instances/<id>/{trajectory.jsonl, patch.diff, summary.txt, run.log}
```

A prediction line is appended (one ``write`` on an O_APPEND file, then fsync) only after the instance's
files and its ``done`` status are in place, so a crash at any moment leaves either no line (the instance
runs again on --resume) or a whole line (it never runs again): every instance ends up exactly once in
``preds.jsonl``. A torn last line (the writer killed mid-write, which one ``write`` makes unlikely) is cut
off when the run is resumed. Status files are replaced atomically (write, fsync, rename).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel

from loopcoder.scenarios.swebench.errors import DatasetError
from loopcoder.scenarios.swebench.predictions import append_prediction

RUN_FILE = "run.json"
PREDS_FILE = "preds.jsonl"
INSTANCES_DIR = "instances"
STATUS_FILE = "status.json"
_SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,150}")
StateName = Literal["pending", "running", "done", "failed", "interrupted"]


def safe_name(instance_id: str) -> str:
    """A file name for ``instance_id``: itself when harmless, else a hash (ids come from dataset files)."""
    if _SAFE.fullmatch(instance_id):
        return instance_id
    return "id-" + hashlib.sha256(instance_id.encode()).hexdigest()[:24]


class InstanceStatus(BaseModel):
    """One instance of a run as the status file records it."""

    instance_id: str
    state: StateName = "pending"
    reason: str = ""  # done: the agent's stop reason; failed: why (see episode.InstanceOutcome)
    failure_kind: str = "-"  # infrastructure | model | -
    detail: str = ""
    stage: str = ""  # while running: checkout, image, sandbox, agent
    attempt: int = 0
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    seconds: float = 0.0
    steps: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    image: Optional[str] = None
    patch_files: list[str] = []
    patch_error: Optional[str] = None
    host: str = ""
    pid: int = 0
    prediction: bool = False  # its line is in preds.jsonl


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    @property
    def preds_path(self) -> Path:
        return self.path / PREDS_FILE

    def instance_dir(self, instance_id: str) -> Path:
        return self.path / INSTANCES_DIR / safe_name(instance_id)

    def exists(self) -> bool:
        return self.run_file.is_file() or self.preds_path.is_file()

    # -- run settings ----------------------------------------------------------------------------

    def check_start(self, model_name_or_path: str, resume: bool) -> None:
        """DatasetError when a run of ``model_name_or_path`` cannot start here (``resume``: continue one)."""
        if resume:
            if not self.run_file.is_file():
                raise DatasetError(f"nothing to resume: {self.run_file} does not exist")
            recorded = json.loads(self.run_file.read_text()).get("model_name_or_path")
            if recorded != model_name_or_path:
                raise DatasetError(f"{self.path} holds predictions of model {recorded!r}; this run's model is "
                                   f"{model_name_or_path!r} (use a new --output)")
        elif self.exists():
            raise DatasetError(f"{self.path} already holds a run; pass --resume to continue it, or a new --output")

    def start(self, meta: dict, resume: bool) -> dict:
        """Record a new run, or check that ``meta`` continues the recorded one (--resume); returns the record."""
        self.check_start(meta["model_name_or_path"], resume)
        if resume:
            recorded = json.loads(self.run_file.read_text())
            selected = list(dict.fromkeys(recorded.get("instances", []) + meta["instances"]))
            recorded.update({k: v for k, v in meta.items() if k not in ("run_id", "created")})
            recorded["instances"] = selected
            recorded.setdefault("resumed", []).append(now())
            meta = recorded
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.run_file, json.dumps(meta, indent=2) + "\n")
        return meta

    def read_meta(self) -> dict:
        if not self.run_file.is_file():
            return {}
        return json.loads(self.run_file.read_text())

    # -- predictions -----------------------------------------------------------------------------

    def predictions(self, repair: bool = False) -> dict[str, dict]:
        """instance_id -> prediction of every whole line; ``repair`` cuts a torn last line off the file."""
        if not self.preds_path.is_file():
            return {}
        data = self.preds_path.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut < len(data) and repair:
            os.truncate(self.preds_path, cut)
        out: dict[str, dict] = {}
        for n, line in enumerate(data[:cut].decode("utf-8", "replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{self.preds_path}:{n}: not a JSON object ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("instance_id"), str):
                raise DatasetError(f"{self.preds_path}:{n}: a prediction without instance_id")
            out[row["instance_id"]] = row
        return out

    def append_prediction(self, prediction: dict) -> None:
        append_prediction(self.preds_path, prediction)

    # -- status files ----------------------------------------------------------------------------

    def write_status(self, status: InstanceStatus) -> None:
        folder = self.instance_dir(status.instance_id)
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(folder / STATUS_FILE, status.model_dump_json(indent=2) + "\n")

    def read_status(self, instance_id: str) -> Optional[InstanceStatus]:
        path = self.instance_dir(instance_id) / STATUS_FILE
        if not path.is_file():
            return None
        try:
            return InstanceStatus.model_validate_json(path.read_text())
        except ValueError:
            return None  # a status file is a display aid; preds.jsonl is the record

    def statuses(self) -> list[InstanceStatus]:
        """Every status file of the run, in the order run.json selected the instances (others after)."""
        order = {iid: n for n, iid in enumerate(self.read_meta().get("instances", []))}
        found = []
        root = self.path / INSTANCES_DIR
        for path in sorted(root.glob(f"*/{STATUS_FILE}")) if root.is_dir() else []:
            try:
                found.append(InstanceStatus.model_validate_json(path.read_text()))
            except ValueError:
                continue
        return sorted(found, key=lambda s: (order.get(s.instance_id, len(order)), s.instance_id))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
