"""`loopcoder agent run|demo` and `loopcoder replay`: one-line errors for bad input, and the embedded server."""
import subprocess

import pytest

from loopcoder.scenarios.cli import main


def run_cli(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    ([], "error: pass exactly one of --task TEXT and --task-file FILE"),
    (["--task", "x", "--task-file", "f"], "error: pass exactly one of --task TEXT and --task-file FILE"),
    (["--task-file", "/nonexistent/issue.md"], "error: [Errno 2] No such file or directory: '/nonexistent/issue.md'"),
    (["--task", "x", "--set", "budgets.stepz=3"], "error: invalid config in "),
    (["--task", "x", "--mode", "swarm"], "error: invalid config in "),
    (["--task", "x", "--budget-steps", "0"], "error: invalid config in "),
])
def test_bad_input_is_one_line_and_exit_2(capsys, repo, tmp_path, args, message):
    code, err = run_cli(capsys, "agent", "run", "--repo", str(repo), "--output", str(tmp_path / "o"), *args)
    assert code == 2 and err.startswith(message) and err.count("\n") == 1, err


def test_a_folder_that_is_not_a_git_repository_is_refused(capsys, tmp_path):
    (tmp_path / "plain").mkdir()
    code, err = run_cli(capsys, "agent", "run", "--repo", str(tmp_path / "plain"), "--task", "x")
    assert code == 2 and err == f"error: {tmp_path / 'plain'} is not a git working tree\n"


def test_a_non_empty_output_folder_is_refused(capsys, repo, tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep").write_text("mine")
    code, err = run_cli(capsys, "agent", "run", "--repo", str(repo), "--task", "x", "--output", str(tmp_path / "o"))
    assert code == 2 and "is not empty; choose a new one with --output" in err and err.count("\n") == 1


def test_an_unreachable_model_server_is_one_line(capsys, repo, tmp_path):
    code, err = run_cli(capsys, "agent", "run", "--repo", str(repo), "--task", "x", "--output", str(tmp_path / "o"),
                        "--model-url", "http://127.0.0.1:9/v1", "--set", "model.max_attempts=2",
                        "--set", "model.backoff_initial_s=0.01")
    assert code == 2 and err.startswith("error: model server: APIConnectionError") and err.count("\n") == 1, err


def test_replay_of_a_bad_file_is_one_line(capsys, tmp_path):
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"hello": 1}\n')
    code, err = run_cli(capsys, "replay", str(bad), "--output", str(tmp_path / "r"))
    assert code == 2 and err.startswith(f"error: {bad}:1: not a trajectory event") and err.count("\n") == 1


@pytest.mark.docker
def test_demo_runs_the_embedded_server_on_a_fresh_tiny_checkpoint(capsys, tmp_path, monkeypatch, docker_ready):
    monkeypatch.chdir(tmp_path)
    main(["agent", "demo", "--set", "budgets.steps=1", "--set", "model.max_tokens=8", "--output", "run"])
    captured = capsys.readouterr()
    assert "wrote a tiny random checkpoint to .cache/demo-model" in captured.err
    assert "native server for 'demo-model' at http://127.0.0.1:" in captured.err
    assert captured.out.startswith("stop reason  steps (1 model calls of 1)")
    assert (tmp_path / "run" / "patch.diff").exists() and (tmp_path / "run" / "summary.txt").exists()
    log = subprocess.run(["git", "log", "--oneline"], cwd=tmp_path / ".cache" / "demo-repo", text=True,
                         capture_output=True).stdout
    assert log.strip().endswith("stats helpers")


def test_an_exit_code_a_command_asks_for_reaches_the_shell(monkeypatch, capsys):
    # typer.Exit(1) comes back from the app as a return value (standalone_mode=False); main must exit with it.
    # `loopcoder doctor` is the existing command that asks for 1 (a failed check); replay asks for 1 too.
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(SystemExit) as exit_info:
        main(["doctor"])
    assert exit_info.value.code == 1
    assert "docker engine" in capsys.readouterr().out
