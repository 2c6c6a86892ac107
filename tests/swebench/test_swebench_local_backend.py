"""`swebench run --runtime-set sandbox.backend=local`: episodes without Docker (for a throwaway host that has none,
docs/nano.md), graded afterwards in Docker with `swebench eval` on another machine.

Shows: with the opt-in, an instance runs through the agent with no image and no container, the spec's
environment variables point at the checkout instead of /testbed, and the prediction is the gold patch; without
the opt-in the instance fails as `sandbox_failed` with the reason and the batch still finishes; `--eval` is
refused before anything starts (grading runs in Docker only); the predictions of a local run grade as resolved
under `swebench eval` (Docker).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopcoder.agent import read_trajectory

from instance_model import InstanceModel, gold_script, model_patch_lines
from cli_support import run_cli
from run_support import loopcoder_eval_report, pred_lines, status

IID = "r1chardj0n3s__parse-162"
LOCAL = ["--runtime-set", "sandbox.backend=local", "--runtime-set", "local.allow=true"]
FAST = ["--set", "fsync=false", "--set", "model.backoff_initial_s=0.05"]
PROBE = 'echo "PP=$PYTHONPATH"; echo "WD=$(pwd -P)"'


def _local_run(tmp_path: Path, mini: dict, capsys, *extra: str) -> tuple[int, str, str, Path, InstanceModel]:
    out = tmp_path / "run"
    with InstanceModel([mini[IID]], {IID: gold_script(mini[IID], probe=PROBE)}) as model:
        code, stdout, err = run_cli(capsys, "swebench", "run", "-i", IID, "--model-url", model.url, "-o", str(out),
                                    "--run-id", "local", "--mode", "single", *FAST, *extra)
    return code, stdout, err, out, model


def test_local_backend_runs_an_instance_without_docker_and_predicts_the_gold_patch(tmp_path, mini, capsys,
                                                                                   monkeypatch):
    monkeypatch.delenv("LOOPCODER_ALLOW_LOCAL_SANDBOX", raising=False)
    code, stdout, err, out, _ = _local_run(tmp_path, mini, capsys, *LOCAL)
    assert code == 0, err
    (pred,) = pred_lines(out)
    assert model_patch_lines(pred["model_patch"]) == model_patch_lines(mini[IID]["patch"])
    s = status(out, IID)
    assert (s["state"], s["reason"], s["prediction"]) == ("done", "submitted", True)
    assert s["image"] is None  # no image was built or used
    assert json.loads((out / "run.json").read_text())["sandbox"] == "local"
    events = read_trajectory(out / "instances" / IID / "trajectory.jsonl")
    probe = next(e for e in events if e.type == "tool_result" and e.name == "shell").output
    wd = next(line[3:] for line in probe.splitlines() if line.startswith("WD="))
    pp = next(line[3:] for line in probe.splitlines() if line.startswith("PP="))
    # the spec's PYTHONPATH (/testbed/src:/testbed) with /testbed read as the checkout the commands run in
    assert wd.endswith("/testbed") and pp == f"{wd}/src:{wd}", probe
    assert "no image" in (out / "instances" / IID / "run.log").read_text()


def test_local_backend_without_the_opt_in_fails_the_instance_and_says_how_to_opt_in(tmp_path, mini, capsys,
                                                                                    monkeypatch):
    monkeypatch.delenv("LOOPCODER_ALLOW_LOCAL_SANDBOX", raising=False)
    code, stdout, err, out, model = _local_run(tmp_path, mini, capsys, "--runtime-set", "sandbox.backend=local")
    assert code == 0, err  # the batch finishes; the instance failed
    s = status(out, IID)
    assert (s["state"], s["reason"]) == ("failed", "sandbox_failed")
    assert "local.allow=true" in s["detail"]
    assert not model.requests  # the model was never asked
    assert not (out / "preds.jsonl").exists() or pred_lines(out) == []


def test_eval_and_official_images_with_the_local_backend_are_refused_before_anything_starts(tmp_path, mini, capsys):
    code, stdout, err, out, model = _local_run(tmp_path, mini, capsys, *LOCAL, "--eval")
    assert code != 0
    assert "--eval grades in Docker only" in stdout + err
    assert not out.exists() and not model.requests
    code, stdout, err, out, model = _local_run(tmp_path, mini, capsys, *LOCAL, "--images", "official")
    assert code != 0 and "--images official needs Docker" in stdout + err
    assert not out.exists() and not model.requests


@pytest.mark.docker
def test_predictions_of_a_local_run_resolve_under_swebench_eval_in_docker(tmp_path, mini, base_image, capsys,
                                                                          monkeypatch):
    monkeypatch.delenv("LOOPCODER_ALLOW_LOCAL_SANDBOX", raising=False)
    code, stdout, err, out, _ = _local_run(tmp_path, mini, capsys, *LOCAL)
    assert code == 0, err
    code, stdout, err = run_cli(capsys, "swebench", "eval", "-p", str(out / "preds.jsonl"), "-i", IID,
                                "-o", str(out), "--run-id", "local")
    assert code == 0, err
    assert loopcoder_eval_report(out)["resolved_ids"] == [IID]
