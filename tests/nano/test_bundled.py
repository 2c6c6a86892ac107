"""The bundled held-out subset (scenarios/nano/data): valid instances of held-out packages, leak-free
bundles, and gold patches that `swebench eval` resolves."""
from __future__ import annotations

import json

import pytest

from loopcoder.scenarios.nano import HELDOUT, REPOS
from loopcoder.scenarios.nano.synth import load_recipe
from loopcoder.scenarios.swebench.dataset import load_dataset
from loopcoder.scenarios.swebench.repos import check_repository


def bundled():
    return load_dataset(HELDOUT)


def test_bundled_subset_is_held_out_and_leak_free():
    insts = bundled()
    recipe = load_recipe()
    heldout = {p.repo: p for p in recipe.split("heldout")}
    assert 6 <= len(insts) <= 8 and len({i["repo"] for i in insts}) >= 3
    size = 0
    for inst in insts:
        assert inst["repo"] in heldout and inst["nano"]["split"] == "heldout"
        assert inst["instance_id"].startswith(inst["repo"].replace("/", "__") + ".synth-")
        assert inst["test_patch"] == "" and 1 <= len(json.loads(inst["FAIL_TO_PASS"])) <= 10
        bundle = REPOS / f"{inst['instance_id']}.bundle"
        size += bundle.stat().st_size
        assert check_repository(inst, REPOS).startswith("ok")
    assert size < 1_500_000
    assert sorted(p.name for p in REPOS.iterdir()) == sorted(f"{i['instance_id']}.bundle" for i in insts)


@pytest.mark.slow
def test_gold_patches_of_the_bundled_subset_resolve(docker_client, base_image, tmp_path):
    from loopcoder.runtime.config import load_runtime_config
    from loopcoder.scenarios.swebench.batch import evaluate_batch
    from loopcoder.scenarios.swebench.config import load_swebench_config
    from loopcoder.scenarios.swebench.evaluation import EvalContext
    from loopcoder.scenarios.swebench.predictions import gold_predictions

    insts = bundled()
    ctx = EvalContext(load_swebench_config(), load_runtime_config(), docker_client, tmp_path / "run", "gold",
                      repos_dir=REPOS)
    report = evaluate_batch(insts, gold_predictions(insts), ctx)
    assert [r.status for r in report.results] == ["resolved"] * len(insts)
