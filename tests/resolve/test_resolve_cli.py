"""`loopcoder resolve` refusals through the CLI: one `error:` line, exit 2, nothing started or written, and the
token in none of it. None of these reach Docker or the model."""
import pytest

from loopcoder.scenarios.cli import main

from resolve_support import files_holding, secret_forms


def run(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def one_error(code, out, err):
    assert code == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("state, locked, says", [("open", True, "is locked; --open-pr needs an unlocked issue"),
                                                 ("closed", False, "is closed; --open-pr needs an open issue")])
def test_a_locked_or_closed_issue_with_open_pr_stops_before_anything_runs(github, scripted, token, tmp_path, capsys,
                                                                        monkeypatch, state, locked, says):
    github.repo("octo/stats").issues[1].locked = locked
    github.repo("octo/stats").issues[1].state = state
    monkeypatch.setenv("GITHUB_ENTERPRISE_TOKEN", token)
    model = scripted([])
    out_dir = tmp_path / "run"
    code, out, err = run(["resolve", github.issue_url("octo", "stats", 1), "--open-pr", "--model-url", model.url,
                          "--output", str(out_dir)], capsys)
    line = one_error(code, out, err)
    assert line == f"error: issue octo/stats#1 {says} (run without --open-pr to get the patch only)"
    assert not out_dir.exists() and model.requests == []
    assert not [r for r in github.records if r.kind == "git"]  # not even cloned
    assert token not in out + err


def test_open_pr_without_a_token(github, capsys, tmp_path):
    code, out, err = run(["resolve", github.issue_url("octo", "stats", 1), "--open-pr", "--output",
                          str(tmp_path / "run")], capsys)
    assert "--open-pr needs a token that may push and open pull requests: set GITHUB_ENTERPRISE_TOKEN for 127.0.0.1:" \
        in one_error(code, out, err)


def test_a_repository_that_does_not_exist(github, capsys, token, monkeypatch):
    monkeypatch.setenv("GITHUB_ENTERPRISE_TOKEN", token)
    code, out, err = run(["resolve", github.issue_url("octo", "nope", 1)], capsys)
    line = one_error(code, out, err)
    assert line.startswith("error: repository octo/nope not found on 127.0.0.1:") and token not in err


def test_an_issue_that_does_not_exist(github, capsys):
    code, out, err = run(["resolve", github.issue_url("octo", "stats", 42)], capsys)
    assert one_error(code, out, err).startswith("error: issue #42 of octo/stats not found on 127.0.0.1:")


def test_a_rate_limited_api_says_when_it_resets(github, capsys):
    github.set_rate_limit(remaining=0, reset_in=1800)
    code, out, err = run(["resolve", github.issue_url("octo", "stats", 1)], capsys)
    line = one_error(code, out, err)
    assert "GitHub API rate limit exhausted" in line and "it resets at " in line and "(in 30 min)" in line


def test_a_short_rate_limit_is_waited_out_then_the_next_error_shows(github, capsys):
    github.set_rate_limit(remaining=0, reset_in=1)
    code, out, err = run(["resolve", github.issue_url("octo", "nope", 1)], capsys)
    assert "GitHub rate limit reached; waiting" in err
    assert one_error(code, out, err).startswith("error: repository octo/nope not found")


def test_a_rejected_token(github, capsys, monkeypatch):
    bad = "ghp_rejected_0123456789abcdef"
    monkeypatch.setenv("GITHUB_ENTERPRISE_TOKEN", bad)
    code, out, err = run(["resolve", github.issue_url("octo", "stats", 1)], capsys)
    line = one_error(code, out, err)
    assert line.startswith("error: GitHub rejected the GITHUB_ENTERPRISE_TOKEN token on 127.0.0.1:")
    assert bad not in out + err


def test_a_github_com_token_is_not_sent_to_another_host(github, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_github_com_only_123456")
    run(["resolve", github.issue_url("octo", "nope", 1)], capsys)
    assert {r.user for r in github.records} == {None}  # sent anonymously


def test_a_private_repository_that_needs_a_token(github, capsys, tmp_path):
    from loopcoder.scenarios.demo import make_demo_repo

    github.add_repo("octo", "secret", make_demo_repo(tmp_path / "s"), private=True)
    code, out, err = run(["resolve", github.issue_url("octo", "secret", 1)], capsys)
    assert "or it is private: set GITHUB_ENTERPRISE_TOKEN for 127.0.0.1:" in one_error(code, out, err)


def test_bad_flags(github, capsys, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    url = github.issue_url("octo", "stats", 1)
    for args, says in [(["--sandbox-network", "host"], "--sandbox-network must be none or bridge"),
                       (["--output", str(busy)], "is not empty; choose a new one with --output"),
                       (["--api-url", "ftp://x"], "--api-url 'ftp://x': expected an http(s) URL"),
                       (["--repo-dir", str(tmp_path / "none")], "is not a folder"),
                       (["--set", "resolve.github.nope=1"], "github.nope: unknown key"),
                       (["--set", "budgets.steps=0"], "budgets.steps")]:
        code, out, err = run(["resolve", url, *args], capsys)
        assert says in one_error(code, out, err), (args, err)


def test_the_leak_search_sees_hidden_files_and_encoded_forms(tmp_path, token):
    """The search the end-to-end tests rely on finds the token in git internals and in a Basic header."""
    (tmp_path / "w" / ".git").mkdir(parents=True)
    (tmp_path / "w" / ".git" / "config").write_text(f"[remote]\n\turl = https://x-access-token:{token}@h/o/r\n")
    (tmp_path / "trace").write_bytes(b"Authorization: Basic " + secret_forms(token)[1])
    assert sorted(files_holding(tmp_path, token)) == ["trace", "w/.git/config"]
