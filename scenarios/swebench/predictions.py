"""Predictions in the official format: ``{"instance_id", "model_name_or_path", "model_patch"}`` per line.

Read from .jsonl (one object per line) or .json (a list, or a dict keyed by instance id, as SWE-agent
writes). `append_prediction` adds one line atomically (one ``write`` of the whole line on an O_APPEND
file, then fsync), so a crash never leaves half a line; `load_predictions` keeps the last line of an id.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from loopcoder.scenarios.swebench.errors import DatasetError

GOLD = "gold"


def load_predictions(path: str | Path) -> dict[str, dict]:
    """instance_id -> prediction; DatasetError (one line) on a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"predictions file not found: {path}")
    text = path.read_text()
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{n}: not a JSON object ({exc.msg})") from None
    elif path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        rows = list(data.values()) if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise DatasetError(f"{path}: expected a list of predictions or a dict keyed by instance id")
    else:
        raise DatasetError(f"{path}: predictions must be .jsonl or .json")
    out: dict[str, dict] = {}
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not isinstance(row.get("instance_id"), str):
            raise DatasetError(f"{path}: prediction {n} has no instance_id")
        patch = row.get("model_patch")
        if patch is not None and not isinstance(patch, str):
            raise DatasetError(f"{path}: prediction {row['instance_id']}: model_patch must be a string or null")
        row.setdefault("model_name_or_path", "None")
        out[row["instance_id"]] = row
    return out


def gold_predictions(instances: list[dict]) -> dict[str, dict]:
    """The dataset's own patches as predictions (model ``gold``), as ``swebench`` does for ``--gold``."""
    return {i["instance_id"]: {"instance_id": i["instance_id"], "model_name_or_path": GOLD, "model_patch": i["patch"]}
            for i in instances}


def append_prediction(path: str | Path, prediction: dict) -> None:
    """Append one prediction line atomically (the run side writes preds.jsonl with this)."""
    line = (json.dumps({k: prediction[k] for k in ("instance_id", "model_name_or_path", "model_patch")}
                       | {k: v for k, v in prediction.items()
                          if k not in ("instance_id", "model_name_or_path", "model_patch")}) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
