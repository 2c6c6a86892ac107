"""`loopcoder resolve` end to end against the fake GitHub on loopback: the issue and all its comments fetched,
the repository cloned over git smart HTTP, the agent run in a Docker sandbox with a scripted model over HTTP,
the patch fixing the bug, and a draft pull request on the fake with the right branch and body. The CLI runs
as its own process, so everything it prints is searched for the token, as is every file it wrote."""
import json
import subprocess
from pathlib import Path

import pytest

from loopcoder.agent import read_trajectory
from loopcoder.runtime.workspace import GitWorkspace

from resolve_support import COMMENTS, ISSUE_BODY, SUBMIT_SUMMARY, count_files, files_holding, run_cli, solve_script

pytestmark = pytest.mark.docker

FAST = ["--no-thinking", "--set", "resolve.environment.build_image=false", "--set", "resolve.github.per_page=2"]
# An attacker's look for credentials inside the sandbox (nothing there may hold the token), and traps for host
# git in the tree's .git: a pre-push hook, a hooks path and a credential helper that would write files on the host.
SNOOP = ("env; cat /proc/1/environ | tr '\\0' '\\n'; git config --list --show-origin; "
         "mkdir -p .git/hooks; printf '#!/bin/sh\\ntouch {marker}-hook\\n' > .git/hooks/pre-push; chmod +x .git/hooks/pre-push; "
         "git config core.hooksPath .git/hooks; git config credential.helper '!f() {{ cat > {marker}-cred; }}; f'; "
         "git config --list | grep -c -e hookspath -e credential")


def assert_no_token(token, out_dir, proc, github):
    assert files_holding(out_dir, token) == [], "token written to a file"
    assert count_files(out_dir) > 20  # the search did look at the workspace, both git dirs, the outputs
    assert token not in proc.stdout and token not in proc.stderr
    assert github.scans > 0 and github.scan_hits == []  # never on a command line while git talked to the fake


def clean_run(patch: str, github, tmp_path, docker_ready) -> str:
    """The patch on a fresh clone of the repository, tests in a fresh sandbox; their output."""
    from loopcoder.runtime.config import SandboxConfig, load_runtime_config
    from loopcoder.runtime.docker_sandbox import DockerSandbox

    clean = GitWorkspace.clone(f"{github.url}/octo/stats.git", tmp_path / "clean")
    assert clean.apply_patch(patch).ok
    with DockerSandbox(clean.path, config=SandboxConfig(cpus=1.0, memory="512m", default_timeout_s=120),
                       image=load_runtime_config().images.base_image, client=docker_ready,
                       labels={"loopcoder.purpose": "test"}) as sb:
        result = sb.exec("python3 -m unittest 2>&1", timeout=60)
    assert result.exit_code == 0, result.output
    return result.output


def test_resolve_fetches_clones_fixes_and_opens_a_draft_pull_request_from_a_fork(github, scripted, token, tmp_path,
                                                                                docker_ready):
    marker = f"/tmp/loopcoder-trap-{tmp_path.name}"
    model = scripted(solve_script(extra_shell=SNOOP.format(marker=marker)))
    out = tmp_path / "run"
    proc = run_cli(["resolve", github.issue_url("octo", "stats", 1) + "#issuecomment-5001", "--model-url",
                    model.url, "--output", str(out), "--open-pr", *FAST], {"GITHUB_ENTERPRISE_TOKEN": token})
    assert proc.returncode == 0, proc.stderr
    # the issue and every comment (two pages) reached the model
    task = model.requests[0]["messages"][1]["content"]
    assert ISSUE_BODY in task and all(body in task for _, body in COMMENTS) and "Labels: bug" in task
    assert len([r for r in github.records if r.path.endswith("/issues/1/comments")]) == 2
    # the patch fixes the bug on a clean checkout
    patch = (out / "patch.diff").read_text()
    assert "+    return (ordered[middle - 1] + ordered[middle]) / 2" in patch
    assert "Ran 4 tests" in clean_run(patch, github, tmp_path, docker_ready)
    # the draft pull request: from the fork (pushing to octo/stats is refused), right branch, summary as body
    pr_record = json.loads((out / "pull_request.json").read_text())
    [pr] = github.repo("octo/stats").pulls
    branch = pr_record["branch"]
    assert branch.startswith("loopcoder/issue-1-") and pr_record["fork_created"] and pr_record["pushed_to"] == "you/stats"
    assert pr["draft"] is True and pr["head"]["label"] == f"you:{branch}" and pr["base"]["ref"] == "master"
    summary = (out / "summary.md").read_text()
    assert pr["body"] == summary.rstrip() + "\n\nFixes #1\n"
    assert SUBMIT_SUMMARY in summary and "| final check | `python3 -m unittest` | passed: Ran 4 tests: OK |" in summary
    assert "| agent, step 3 | `python3 -m unittest` | FAILED: Ran 4 tests: FAILED (failures=1) |" in summary
    assert "- `stats.py` (+1 -1)" in summary and str(tmp_path) not in summary  # no local path in the body
    fork = github.repo("you/stats")
    pushed = subprocess.run(["git", "diff", f"{branch}^", branch, "--full-index", "--src-prefix=a/", "--dst-prefix=b/"],
                            cwd=fork.path, capture_output=True, text=True, check=True).stdout
    assert pushed == patch
    # what was printed
    assert "stop reason  submitted (median() returned the upper middle value" in proc.stdout
    assert f"pull request {pr['html_url']} (draft: True, head you:{branch}, pushed to you/stats (fork created))" \
        in proc.stdout.replace("\n", " ")
    assert "octo/stats refused the push (Permission to octo/stats.git denied to you." in " ".join(proc.stderr.split())
    record = json.loads((out / "resolve.json").read_text())
    assert record["stop_reason"] == "submitted" and record["final_check"]["passed"] is True
    assert record["source"] == f"{github.url}/octo/stats.git"
    assert {p.name for p in out.iterdir()} >= {"issue.json", "task.md", "trajectory.jsonl", "patch.diff",
                                               "summary.md", "resolve.json", "pull_request.json", "workspace"}
    assert_no_token(token, tmp_path, proc, github)  # the whole test folder: output, fake GitHub's repos
    # the traps were set inside the sandbox, and host git (commit, push) never ran them
    snoop = [e for e in read_trajectory(out / "trajectory.jsonl") if e.type == "tool_result" and e.name == "shell"]
    assert snoop[0].output.rstrip().endswith("\n2")
    assert not Path(f"{marker}-hook").exists() and not Path(f"{marker}-cred").exists()


def test_a_pusher_with_repo_dir_gets_a_branch_on_the_repository(github, scripted, token, tmp_path, docker_ready):
    github.repo("octo/stats").pushers.add("you")
    local = tmp_path / "my-checkout"
    subprocess.run(["git", "clone", "-q", f"{github.url}/octo/stats.git", str(local)], check=True)
    model = scripted(solve_script())
    out = tmp_path / "run"
    github.records.clear()
    proc = run_cli(["resolve", github.issue_url("octo", "stats", 1), "--repo-dir", str(local), "--model-url",
                    model.url, "--output", str(out), "--open-pr", *FAST], {"GITHUB_ENTERPRISE_TOKEN": token})
    assert proc.returncode == 0, proc.stderr
    [pr] = github.repo("octo/stats").pulls
    assert pr["head"]["label"].startswith("octo:loopcoder/issue-1-") and pr["head"]["repo"]["full_name"] == "octo/stats"
    assert "you/stats" not in github.repos
    assert not [r for r in github.records if r.kind == "git" and r.path.endswith("git-upload-pack")]  # no clone
    assert [r.path for r in github.records if r.kind == "git" and r.path.endswith("git-receive-pack")] == [
        "/octo/stats.git/git-receive-pack"]
    assert json.loads((out / "resolve.json").read_text())["source"] == str(local)
    assert_no_token(token, out, proc, github)


def test_when_every_push_is_refused_the_patch_and_summary_are_still_saved(github, scripted, tmp_path, docker_ready):
    readonly = "ghp_readonly_" + "7" * 24
    github.add_user("reader", readonly, can_write=False)
    model = scripted(solve_script())
    out = tmp_path / "run"
    proc = run_cli(["resolve", github.issue_url("octo", "stats", 1), "--model-url", model.url, "--output",
                    str(out), "--open-pr", *FAST], {"GITHUB_ENTERPRISE_TOKEN": readonly})
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert errors[0].startswith("error: octo/stats refused the push (Permission to octo/stats.git denied to reader.")
    assert "and so did your fork reader/stats" in errors[0] and f"the patch and summary are in {out}" in errors[0]
    assert "+    return (ordered[middle - 1] + ordered[middle]) / 2" in (out / "patch.diff").read_text()
    assert (out / "summary.md").is_file() and "stop reason  submitted" in proc.stdout
    assert not (out / "pull_request.json").exists() and github.repo("octo/stats").pulls == []
    assert_no_token(readonly, out, proc, github)


def test_the_sandbox_has_no_network_unless_asked(github, scripted, tmp_path, docker_ready):
    from loopcoder.agent import read_trajectory

    from scripted_server import call

    interfaces = []
    for network in ("none", "bridge"):
        model = scripted([call("shell", {"command": "ls /sys/class/net"}), call("submit", {"summary": "looked"})])
        out = tmp_path / network
        proc = run_cli(["resolve", github.issue_url("octo", "stats", 1), "--model-url", model.url, "--output",
                        str(out), "--sandbox-network", network, "--mode", "single", *FAST], {})
        assert proc.returncode == 0, proc.stderr
        [shell] = [e for e in read_trajectory(out / "trajectory.jsonl") if e.type == "tool_result"][:1]
        interfaces.append(sorted(shell.output.splitlines()[1:]))
        assert ("--sandbox-network bridge: the agent's commands" in proc.stderr) == (network == "bridge")
    assert interfaces[0] == ["lo"] and "eth0" in interfaces[1]
    assert "The sandbox has network access" in (tmp_path / "bridge" / "task.md").read_text()
