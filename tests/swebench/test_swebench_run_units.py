"""`swebench run` pieces without Docker: repository sources (bundles, clones), the run folder, CLI errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopcoder.scenarios.cli import main
from loopcoder.scenarios.swebench.errors import DatasetError
from loopcoder.scenarios.swebench.repos import future_objects, isolated_checkout, repo_source
from loopcoder.scenarios.swebench.rundir import RunDir, safe_name

from run_support import git, leaky_repo


def test_a_repository_missing_from_repos_dir_is_cloned_once_and_checked_out_without_its_future(tmp_path, mini):
    inst = mini["r1chardj0n3s__parse-162"]
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    fix = leaky_repo(inst, upstream)  # like GitHub: the fix commit, a tag and a release branch
    empty = tmp_path / "repos"
    empty.mkdir()
    cache = tmp_path / "cache"
    url = f"file://{upstream}/{{key}}.git"
    source = repo_source(inst, empty, url, cache)
    assert source == cache / "r1chardj0n3s__parse.git" and git(source, "cat-file", "-t", fix) == "commit"
    dest = isolated_checkout(inst, tmp_path / "checkout", source=source)
    assert git(dest, "rev-list", "--all").split()[0] == inst["base_commit"] and git(dest, "tag") == ""
    assert fix not in git(dest, "rev-list", "--all") and future_objects(dest, inst["base_commit"]) == []
    # reused: the upstream can go away
    for child in upstream.iterdir():
        if child.is_dir():
            import shutil

            shutil.rmtree(child)
    assert repo_source(inst, empty, url, cache) == source


def test_a_repository_in_repos_dir_is_used_as_it_is(tmp_path, mini):
    inst = mini["r1chardj0n3s__parse-162"]
    assert repo_source(inst, None, None, tmp_path).name == "r1chardj0n3s__parse.bundle"  # the bundled one


def test_missing_repositories_are_one_line_errors_without_credentials(tmp_path, mini):
    inst = mini["r1chardj0n3s__parse-162"]
    with pytest.raises(DatasetError) as off:
        repo_source(inst, tmp_path, None, tmp_path / "cache")
    assert "cloning is off: run.clone_url is null" in str(off.value) and "\n" not in str(off.value)
    with pytest.raises(DatasetError) as failed:
        repo_source(inst, tmp_path, "https://user:s3cret@127.0.0.1:9/{repo}.git", tmp_path / "cache")
    text = str(failed.value)
    assert "cloning https://127.0.0.1:9/r1chardj0n3s/parse.git failed" in text
    assert "s3cret" not in text and "\n" not in text
    assert not (tmp_path / "cache" / "r1chardj0n3s__parse.git").exists()


def test_a_torn_last_prediction_line_is_cut_off_on_resume(tmp_path):
    rd = RunDir(tmp_path)
    rd.append_prediction({"instance_id": "a", "model_name_or_path": "m", "model_patch": "p"})
    with open(rd.preds_path, "a") as f:
        f.write('{"instance_id": "b", "model_na')  # a writer killed mid-line
    assert list(rd.predictions()) == ["a"]
    assert list(rd.predictions(repair=True)) == ["a"]
    rd.append_prediction({"instance_id": "b", "model_name_or_path": "m", "model_patch": ""})
    assert [json.loads(l)["instance_id"] for l in rd.preds_path.read_text().splitlines()] == ["a", "b"]


def test_a_run_folder_is_continued_only_with_resume_and_the_same_model(tmp_path):
    rd = RunDir(tmp_path / "run")
    meta = {"run_id": "r", "model_name_or_path": "m1", "instances": ["a"]}
    with pytest.raises(DatasetError, match="nothing to resume"):
        rd.start(dict(meta), resume=True)
    rd.start(dict(meta), resume=False)
    with pytest.raises(DatasetError, match="already holds a run; pass --resume"):
        rd.start(dict(meta), resume=False)
    with pytest.raises(DatasetError, match="holds predictions of model 'm1'; this run's model is 'm2'"):
        rd.start(dict(meta, model_name_or_path="m2"), resume=True)
    again = rd.start(dict(meta, instances=["b"], run_id="ignored"), resume=True)
    assert again["run_id"] == "r" and again["instances"] == ["a", "b"] and len(again["resumed"]) == 1


def test_instance_ids_become_safe_file_names():
    assert safe_name("django__django-11099") == "django__django-11099"
    for bad in ("../x", ".hidden", "a/b", "", "x" * 300, "evil<id>"):
        name = safe_name(bad)
        assert name.startswith("id-") and "/" not in name and len(name) < 40
    assert safe_name("../x") != safe_name("../y")


@pytest.mark.parametrize("args, message", [
    (["--executor", "dask"], "error: --executor 'dask': use local or ray"),
    (["--ray-address", "auto"], "error: --ray-address needs --executor ray"),
    (["--filter", "["], "error: --filter '[' is not a regular expression"),
    (["--filter", "^nothing-matches$"], "error: --filter '^nothing-matches$' matches no instance"),
    (["-i", "no__such-1"], "error: "),
    (["--set", "budgets.stepz=3"], "error: invalid config in "),
    (["--swebench-set", "run.workers=0"], "error: invalid config in "),
    (["--model-url", "http://127.0.0.1:9/v1", "--set", "model.max_attempts=1"], "error: model server: "),
])
def test_bad_run_input_is_one_line_and_exit_2(capsys, tmp_path, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["swebench", "run", "-o", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "out" / "run.json").exists()


def test_resume_of_a_folder_without_a_run_is_refused(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["swebench", "run", "--resume"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == "error: --resume needs the --output folder of the run to continue\n"
    (tmp_path / "out").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["swebench", "run", "-o", str(tmp_path / "out"), "--resume", "--model-url", "http://127.0.0.1:9/v1"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == f"error: nothing to resume: {tmp_path / 'out' / 'run.json'} does not exist\n"


@pytest.fixture(scope="module")
def mini():
    from loopcoder.scenarios.swebench.dataset import load_dataset

    return {i["instance_id"]: i for i in load_dataset("mini")}
