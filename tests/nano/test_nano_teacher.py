"""The Nano teacher: a real HTTP server on loopback driving the real agent through `swebench run` (Docker
sandboxes from the environment image) and the real evaluation, on a bundled synthesised parse instance
(its statement names the function, so a grounded route exists) and on the mini instance parse-162 (the
fastest, about 1 s an episode; its statement names neither the function nor the test, so its episodes are
ungrounded). Plus the pure parts (hunks, edit strings, wrong variants, grounding, the held-out guard)
without Docker."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from loopcoder.agent.trajectory import ModelAnswer, ModelRequest, ToolCallEvent, ToolResultEvent, read_trajectory
from loopcoder.scenarios.nano import HELDOUT, REPOS
from loopcoder.scenarios.nano.grounding import missing, ungrounded
from loopcoder.scenarios.nano.teach import build_index, check_not_heldout, plan_runs, teach
from loopcoder.scenarios.nano.teacher import edit_strings, parse_hunks, wrong_variants
from loopcoder.scenarios.swebench.dataset import MINI_DATASET, MINI_REPOS, load_dataset
from loopcoder.scenarios.swebench.errors import DatasetError

FAST = "r1chardj0n3s__parse-162"
SYNTH = "r1chardj0n3s__parse.synth-ea4c64946f"  # statement names `parse.Parser.findall`, no test id


def _synth_dataset(tmp_path: Path) -> Path:
    """The bundled held-out synth instance as a training file (a test of the teacher, not of Nano)."""
    [inst] = load_dataset(HELDOUT, instance_ids=[SYNTH])
    return _dataset(tmp_path, [inst])


def _quiet(*args) -> None:
    pass


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]


def _calls(path: Path) -> list[tuple[str, dict]]:
    return [(e.name, e.arguments) for e in read_trajectory(path) if isinstance(e, ToolCallEvent)]


def _dataset(tmp_path: Path, insts: list[dict]) -> Path:
    path = tmp_path / "data" / "train.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(i) + "\n" for i in insts))
    return path


# -- end to end (Docker) ----------------------------------------------------------------------------
def test_the_teacher_resolves_an_instance_end_to_end_with_thinking(docker_ready, tmp_path):
    out = tmp_path / "traj"
    counts = teach(_synth_dataset(tmp_path), REPOS, out, thinking_share=1.0, status=tmp_path / "S.md", log=_quiet)
    assert counts["kept"] == counts["graded"] == 1 and counts["thinking"] == 1
    assert "Kept (resolved) episodes: **1** of 1 graded" in (tmp_path / "S.md").read_text()
    [row] = _rows(out)
    assert row["instance_id"] == SYNTH and row["resolved"] and row["thinking"] and row["steps"] >= 5
    # the evaluation (not the teacher) said resolved: both verdicts in the eval's own result file
    result = json.loads(next((out / "runs").rglob("result.json")).read_text())
    assert result["status"] == "resolved" and result["swebench_resolved"] and result["junit_resolved"]
    # the kept file is the agent's own trajectory and reads back with its reader
    events = read_trajectory(out / row["trajectory"])
    assert events[0].config["mode"] == "single" and events[0].config["context"]["max_model_len"] == 8192
    assert events[-1].type == "stop" and events[-1].reason == "submitted"
    answers = [e for e in events if isinstance(e, ModelAnswer)]
    assert all(a.reasoning for a in answers)  # thinking on: every answer carries reasoning text
    assert all(len(a.tool_calls) == 1 and a.tool_calls[0]["type"] == "function"
               and isinstance(a.tool_calls[0]["function"]["arguments"], str) for a in answers)
    calls = [e for e in events if isinstance(e, ToolCallEvent)]
    assert all(c.source == "native" and c.error is None for c in calls)
    names = [c.name for c in calls]
    assert "run_tests" in names or "shell" in names
    assert names.index("str_replace") < len(names) - 2 and names[-1] == "submit"
    results = [e for e in events if isinstance(e, ToolResultEvent)]
    assert all(r.ok for r in results)
    assert all(isinstance(e, ModelRequest) and e.thinking for e in events if e.type == "model_request")
    # grounded: every path, test id, symbol and edited line of every call was in that call's prompt; the
    # statement lists no test, so the first run is the whole suite (a named test id would be invented)
    assert ungrounded(out / row["trajectory"]) == [] and row["ungrounded"] == []
    first_run = next(c for c in calls if c.name in ("run_tests", "shell"))
    assert first_run.arguments.get("paths", []) == [] and "::" not in first_run.arguments.get("command", "")
    # the prompt stays inside Nano's context
    assert max(a.prompt_tokens for a in answers) < 8192


def test_the_direct_routine_runs_the_tests_finds_the_definition_and_reads_down_from_it(docker_ready, tmp_path):
    out = tmp_path / "traj"
    counts = teach(_synth_dataset(tmp_path), REPOS, out, episodes_per_instance=3, thinking_share=0.0,
                   wrong_edit_share=0.0, routine="direct", log=_quiet)
    assert counts["kept"] == counts["graded"] == 3
    rows = _rows(out)
    assert {r["routine"] for r in rows} == {"direct"} and len({r["seed"] for r in rows}) == 3
    for row in rows:
        events = read_trajectory(out / row["trajectory"])
        results = {e.id: e.output for e in events if isinstance(e, ToolResultEvent)}
        calls = [e for e in events if isinstance(e, ToolCallEvent)]
        names = [c.name for c in calls]
        # one routine: the whole suite (the statement names no test), then the named function, read from its
        # definition's line, the edit, the re-run, submit; no listing, no repo_map or outline
        assert names[0] == "run_tests" and calls[0].arguments == {}
        assert names[1] in ("find_definition", "search") and names[2] == "view", names
        assert not {"repo_map", "outline"} & set(names) and calls[2].arguments["path"] != "."
        start = calls[2].arguments["start"]
        assert f"{start}" in results[calls[1].id] and "def findall" in results[calls[2].id].splitlines()[1]
        after = names[names.index("str_replace") + 1:]  # the failing tests again, maybe their whole files
        assert names.count("str_replace") == 1 and set(after[:-1]) == {"run_tests"} and after[-1] == "submit"
        assert ungrounded(out / row["trajectory"]) == []


def test_an_unknown_routine_is_refused_in_one_line(tmp_path):
    with pytest.raises(DatasetError, match="--routine wild: one of varied, direct"):
        teach(_synth_dataset(tmp_path), REPOS, tmp_path / "out", routine="wild", log=_quiet)


def test_a_wrong_first_edit_fails_the_tests_and_is_recovered(docker_ready, tmp_path):
    out = tmp_path / "traj"
    # seed 0's first round: thinking off, a wrong constant that the test run shows failing (deterministic);
    # parse-162 has no grounded route to its function (the mechanics are the point here): kept all the same
    counts = teach(MINI_DATASET, MINI_REPOS, out, thinking_share=0.0, instance_ids=[FAST], seed=0,
                   wrong_edit_share=1.0, keep_ungrounded=True, log=_quiet)
    [row] = _rows(out)
    assert counts["kept"] == 1 and row["wrong_first_edit"] and row["recovered"], row
    events = read_trajectory(out / row["trajectory"])
    sequence = [(e.name, e.ok, e.output) for e in events if isinstance(e, ToolResultEvent)]
    edits = [i for i, (name, ok, _) in enumerate(sequence) if name in ("str_replace", "undo") and ok]
    test_runs = [i for i, (name, _, _) in enumerate(sequence) if name in ("run_tests", "shell")]
    # code edit, a failing test run after it, more edits (undo or restore, the fix), a passing run last
    code_edits = [i for i in edits if "parse.py" in sequence[i][2].splitlines()[0]]
    first_code_edit = code_edits[0]
    failing_after = [i for i in test_runs if i > first_code_edit and not sequence[i][2].startswith(("tests passed",
                                                                                                    "exit code 0"))]
    assert failing_after and any(i > failing_after[0] for i in code_edits)
    assert sequence[test_runs[-1]][2].startswith(("tests passed", "exit code 0"))
    assert not any(e.reasoning for e in events if isinstance(e, ModelAnswer))  # thinking off: no reasoning


def test_different_seeds_give_different_trajectories(docker_ready, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    data = _synth_dataset(tmp_path)
    teach(data, REPOS, a, thinking_share=0.0, seed=1, log=_quiet)
    teach(data, REPOS, b, thinking_share=0.0, seed=2, log=_quiet)
    [ra], [rb] = _rows(a), _rows(b)
    assert ra["seed"] != rb["seed"]
    ca, cb = _calls(a / ra["trajectory"]), _calls(b / rb["trajectory"])
    assert ca != cb
    # and the same seed gives the same tool calls again (the policy is seeded, not random)
    c = tmp_path / "c"
    teach(data, REPOS, c, thinking_share=0.0, seed=1, log=_quiet)
    [rc] = _rows(c)
    assert _calls(c / rc["trajectory"]) == ca


def test_an_instance_the_teacher_cannot_solve_is_dropped(docker_ready, tmp_path):
    mini = {i["instance_id"]: i for i in load_dataset("mini")}
    base = mini[FAST]
    # 1. a corrupted gold patch (a wrong fix): the edit applies, the tests still fail, the teacher gives up
    wrong_fix = dict(base, instance_id="r1chardj0n3s__parse-9001",
                     problem_statement=base["problem_statement"] + "\n(copy one)",
                     patch=base["patch"].replace('u = int(u.ljust(6, "0")[:6])', "u = int(u) + 1"))
    # 2. a gold patch whose lines are not in the file: str_replace is refused, re-viewed, retried, refused
    bad_anchor = dict(base, instance_id="r1chardj0n3s__parse-9002",
                      problem_statement=base["problem_statement"] + "\n(copy two)",
                      patch=base["patch"].replace('u = int(float("." + u) * 1000000)', 'u = float_to_micro(u)'))
    assert wrong_fix["patch"] != base["patch"] and bad_anchor["patch"] != base["patch"]
    dataset = _dataset(tmp_path, [wrong_fix, bad_anchor])
    out = tmp_path / "traj"
    counts = teach(dataset, MINI_REPOS, out, thinking_share=0.0, wrong_edit_share=0.0, log=_quiet)
    assert counts["graded"] == 2 and counts["kept"] == 0 and _rows(out) == []
    assert not (out / "trajectories").exists() or not any((out / "trajectories").rglob("*.jsonl"))
    records = {json.loads(line)["instance_id"]: json.loads(line)
               for line in next((out / "runs").glob("*/teacher.jsonl")).read_text().splitlines()}
    assert records["r1chardj0n3s__parse-9001"]["gave_up"] == "tests still fail after the fix"
    assert records["r1chardj0n3s__parse-9002"]["gave_up"].startswith("no unique anchor")


def test_an_episode_naming_what_its_prompt_never_showed_is_dropped(docker_ready, tmp_path):
    out = tmp_path / "traj"
    # parse-162's statement names neither date_convert nor parse.py: the teacher can only jump there
    counts = teach(MINI_DATASET, MINI_REPOS, out, thinking_share=0.0, instance_ids=[FAST], seed=0,
                   wrong_edit_share=0.0, log=_quiet)
    assert counts["graded"] == 1 and counts["kept"] == 0 and counts["dropped"] == {"ungrounded": 1}
    records = [json.loads(line) for line in next((out / "runs").glob("*/teacher.jsonl")).read_text().splitlines()]
    assert records[0]["ungrounded"] is True
    # it did resolve: indexing again with keep_ungrounded keeps it, with what its calls invented
    counts = build_index(out, keep_ungrounded=True)
    [row] = _rows(out)
    assert counts["kept"] == 1 and any("date_convert" in m for m in row["ungrounded"]), row["ungrounded"]


# -- without Docker ---------------------------------------------------------------------------------
def test_hunks_become_unique_edits_that_apply_the_gold_patch():
    mini = {i["instance_id"]: i for i in load_dataset("mini")}
    from loopcoder.scenarios.nano.teacher import RepoFiles

    repo = RepoFiles(None)
    try:
        for inst in mini.values():
            texts: dict[str, str] = {}
            for h in parse_hunks(inst["patch"]):
                text = texts.setdefault(h.path, repo.read(inst, h.path))
                for seed in range(5):
                    old, new = edit_strings(text, h, random.Random(seed))
                    assert text.count(old) == 1 and old != new
                old, new = edit_strings(text, h, random.Random(0))
                texts[h.path] = text.replace(old, new, 1)
            # every added line of the gold patch is in the edited files
            added = [ln[1:] for ln in inst["patch"].splitlines() if ln.startswith("+") and not ln.startswith("+++")]
            assert all(any(a in t for t in texts.values()) for a in added)
    finally:
        repo.close()


def test_wrong_variants_are_neither_the_bug_nor_the_fix():
    removed, added = "    if n < limit:\n", "    if n <= limit:\n"
    variants = wrong_variants(removed, added)
    assert variants and removed not in variants and added not in variants
    assert {"    if n > limit:\n", "    if n >= limit:\n", "    if n == limit:\n"} <= set(variants)
    assert all("<==" not in v for v in variants)
    assert wrong_variants("    return x[1]\n", "    return x[0]\n")  # constants too
    assert wrong_variants("    pass\n", "    return\n") == []


def test_held_out_instances_are_refused(tmp_path):
    mini = load_dataset("mini")
    train = _dataset(tmp_path, mini[:3])  # boltons
    (train.parent / "heldout.jsonl").write_text(json.dumps(mini[3]) + "\n")  # parse
    check_not_heldout(train, mini[:3])
    with pytest.raises(DatasetError, match="held out"):
        check_not_heldout(train, mini[:4])  # the held-out id itself
    with pytest.raises(DatasetError, match="held out"):
        check_not_heldout(train, [dict(mini[3], instance_id="r1chardj0n3s__parse-7")])  # its repository
    with pytest.raises(DatasetError, match="held-out file"):
        check_not_heldout(train.parent / "heldout.jsonl", mini[3:4])


def test_a_refused_edit_is_viewed_again_retried_with_the_whole_hunk_then_given_up():
    from loopcoder.scenarios.nano.teacher import Policy, RepoFiles, build_oracle

    inst = {i["instance_id"]: i for i in load_dataset("mini")}[FAST]
    repo = RepoFiles(None)
    try:
        oracle = build_oracle(inst, repo)
    finally:
        repo.close()
    policy = Policy(oracle, seed=5, thinking=True, test_command="python3 -m pytest -rA --tb=no", wrong_edit_share=0.0)
    actions, observation = [], None
    for _ in range(30):
        action = policy.step(observation)
        actions.append(action)
        name, args = action["name"], action["arguments"]
        if name == "submit":
            break
        if name == "str_replace" and args["path"] == "parse.py":
            observation = "error: old_str not found in parse.py. The closest line is 222"
        elif name in ("str_replace", "create"):
            observation = f"replaced 1 occurrence in {args['path']}"
        elif name in ("run_tests", "shell"):
            observation = "tests FAILED: 1 failed\nFAILED tests/test_bugs.py::test_microsecond_precision_issue162"
        else:
            observation = "parse.py (lines 200-240 of 1090)"
    names = [a["name"] for a in actions]
    fix_tries = [i for i, a in enumerate(actions) if a["name"] == "str_replace" and a["arguments"]["path"] == "parse.py"]
    assert len(fix_tries) == 2 and names[fix_tries[0] + 1] == "view" and fix_tries[1] == fix_tries[0] + 2
    hunk = parse_hunks(inst["patch"])[0]
    assert actions[fix_tries[1]]["arguments"]["old_str"] == "".join(hunk.old_lines)  # the whole hunk the second time
    assert names[-1] == "submit" and policy.record.gave_up.startswith("str_replace refused twice")
    assert all(a["reasoning"] for a in actions[:-1])


def test_runs_split_thinking_by_share_and_never_mix_equal_statements():
    mini = load_dataset("mini")
    twin = dict(mini[0], instance_id="twin-1")
    plans = plan_runs(mini + [twin], episodes_per_instance=2, thinking_share=0.5, seed=7)
    for k in (0, 1):
        ids = [i for p in plans if p.name.startswith(f"k{k}-") for i in p.instance_ids]
        assert sorted(ids) == sorted(i["instance_id"] for i in mini + [twin])
    assert all(not ({mini[0]["instance_id"], "twin-1"} <= set(p.instance_ids)) for p in plans)
    assert len({p.seed for p in plans}) == len({p.name.rsplit("-", 1)[0] if p.name.count("-") == 2 else p.name
                                                 for p in plans})  # one seed per round and flag
    assert all(p.thinking == p.name.split("-")[1].startswith("think") for p in plans)


def test_the_cli_refuses_a_held_out_dataset_in_one_line(tmp_path):
    import subprocess
    import sys

    mini = load_dataset("mini")
    heldout = _dataset(tmp_path, mini[:1]).with_name("heldout.jsonl")
    heldout.write_text(json.dumps(mini[0]) + "\n")
    proc = subprocess.run([sys.executable, "-m", "loopcoder.scenarios.cli", "nano", "teach", "-d", str(heldout),
                           "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "held-out file" in proc.stderr and not (tmp_path / "out").exists()


def test_the_teacher_answers_over_http_like_a_model_server(tmp_path):
    import httpx

    from loopcoder.scenarios.nano.teacher import Teacher

    mini = load_dataset("mini")
    inst = next(i for i in mini if i["instance_id"] == FAST)
    with Teacher(mini) as teacher:
        models = httpx.get(teacher.url + "/models").json()["data"]
        assert models[0]["id"] == "loopcoder-teacher" and models[0]["max_model_len"] == 8192
        messages = [{"role": "system", "content": "You are a coding agent."},
                    {"role": "user", "content": f"Task:\n{inst['problem_statement']}\n\nThe tests run with: "
                                                "python3 -m pytest -rA --tb=no"}]
        body = {"model": "loopcoder-teacher", "messages": messages, "seed": 4,
                "chat_template_kwargs": {"enable_thinking": True}}
        first = httpx.post(teacher.url + "/chat/completions", json=body).json()
        message = first["choices"][0]["message"]
        [tool_call] = message["tool_calls"]
        assert tool_call["type"] == "function" and isinstance(tool_call["function"]["arguments"], str)
        assert json.loads(tool_call["function"]["arguments"]) and message["reasoning_content"]
        assert first["choices"][0]["finish_reason"] == "tool_calls" and first["usage"]["prompt_tokens"] > 0
        # the same request again (a client retry): the same answer, the episode does not move on
        again = httpx.post(teacher.url + "/chat/completions", json=body).json()
        assert again["choices"][0]["message"]["tool_calls"][0]["function"] == tool_call["function"]
        # thinking off: no reasoning; a task that is none of its instances: a 400 naming why
        plain = httpx.post(teacher.url + "/chat/completions", json={**body, "seed": 5,
                                                                      "chat_template_kwargs": {"enable_thinking": False}})
        assert "reasoning_content" not in plain.json()["choices"][0]["message"]
        unknown = httpx.post(teacher.url + "/chat/completions", json={**body, "messages": [
            messages[0], {"role": "user", "content": "Task:\nsomething else entirely"}]})
        assert unknown.status_code == 400 and "none of the teacher's instances" in unknown.json()["error"]["message"]


def test_grounding_asks_for_each_name_in_the_prompt():
    prompt = ("Crash in `parse.Parser.findall`\nFAILED tests/test_findall.py::test_findall - TypeError\n"
              "   546│        if not (endpos is None):\n")
    assert missing(prompt, "run_tests", {"paths": ["tests/test_findall.py::test_findall"]}) == []
    assert missing(prompt, "run_tests", {"paths": ["tests/test_findall.py"]}) == []
    assert missing(prompt, "run_tests", {"paths": ["test/test_findall.py::test_findall"]})  # a guessed folder
    assert missing(prompt, "run_tests", {"paths": ["tests/test_findall.py::test_find"]})  # a prefix of an id
    assert missing(prompt, "shell", {"command": "python3 -m pytest tests/test_findall.py::test_case_sensitivity"})
    assert missing(prompt, "view", {"path": "findall.py"})  # the tail of test_findall.py is not that path
    assert missing(prompt, "view", {"path": "."}) == []
    assert missing(prompt, "find_definition", {"symbol": "Parser.findall"}) == []
    assert missing(prompt, "find_definition", {"symbol": "Parser.find"})
    assert missing(prompt, "search", {"pattern": "def findall"}) == []
    assert missing(prompt, "repo_map", {"mentioned_symbols": ["evaluate_result"]})
    edit = {"path": "parse.py", "old_str": "        if not (endpos is None):\n", "new_str": "x\n"}
    assert missing(prompt, "str_replace", edit) == ["path 'parse.py'"]
    assert missing(prompt + "\n1 match: parse.py", "str_replace", edit) == []
    assert missing(prompt + "\nparse.py", "str_replace", {**edit, "old_str": "if endpos is None:\n"})


def test_callers_of_finds_the_functions_that_use_a_name():
    from loopcoder.scenarios.nano.teacher import callers_of

    source = ("class Parser:\n"
              "    def parse(self, s):\n"
              "        x = 1\n"
              "        return self._helper(s)\n"
              "\n"
              "    def _helper(self, s):\n"
              "        return s\n"
              "\n"
              "def parse(s):\n"
              "    return Parser().parse(s)\n")
    assert callers_of(source, "_helper") == [("Parser.parse", 2, 4)]
    assert callers_of(source, "parse") == []  # a function's own name on its def line is no use of it
    assert callers_of(source, "Parser") == [("parse", 9, 10)]


def test_the_line_of_a_definition_is_read_from_a_search_result():
    from loopcoder.scenarios.nano.teacher import definition_line

    found = "1 matches for 'def test_x':\ntests/test_a.py\n   358│def test_x(s):"
    assert definition_line(found, "test_x") == 358
    assert definition_line("tests/test_a.py:12: def test_x():", "test_x") == 12
    assert definition_line(found, "test") is None and definition_line("no matches for 'def test_y'", "test_y") is None
