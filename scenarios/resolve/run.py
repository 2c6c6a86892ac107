"""The whole job of `loopcoder resolve`: URL -> issue and comments -> clone -> environment -> agent in a
sandbox -> patch, trajectory, summary.md -> optionally a draft pull request.

Output folder (new or empty): ``issue.json`` (issue and comments as fetched), ``task.md`` (what the agent was
given), ``trajectory.jsonl``, ``patch.diff``, ``summary.md``, ``resolve.json`` (machine-readable record),
``pull_request.json`` (with --open-pr), ``workspace/`` (the clone the agent worked on) and its host-private
repository ``workspace.loopcoder-git``. The token is in none of them: it is sent only in API headers and
through the GIT_ASKPASS helper, and never reaches the sandbox.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from loopcoder.configs import ConfigError
from loopcoder.runtime.errors import WorkspaceError
from loopcoder.runtime.hostgit import run_git, strip_credentials
from loopcoder.runtime.workspace import GitWorkspace
from loopcoder.scenarios.resolve.config import ResolveConfig
from loopcoder.scenarios.resolve.errors import ResolveError
from loopcoder.scenarios.resolve.github import GitHubClient, Issue, Repository
from loopcoder.scenarios.resolve.gitauth import git_credentials
from loopcoder.scenarios.resolve.report import TestRun, clean, diffstat, summary_markdown
from loopcoder.scenarios.resolve.token import Token, find_token, token_hint
from loopcoder.scenarios.resolve.urls import IssueRef, base_url, host_of, parse_issue_url

_PYTEST_SUMMARY = re.compile(r"^=*\s*((?:\d+ (?:passed|failed|errors?|skipped|xfailed|xpassed|warnings?|deselected)"
                             r"(?:, )?)+)(?: in [\d.]+s.*)?=*\s*$", re.M)
_UNITTEST = re.compile(r"^Ran (\d+) tests? in [\d.]+s\s*\n\s*\n?(OK|FAILED)(?: \((.*)\))?", re.M)


@dataclass
class ResolveOptions:
    url: str
    agent_config: Any  # AgentConfig
    config: ResolveConfig = field(default_factory=ResolveConfig)
    repo_dir: Optional[Path] = None
    open_pr: bool = False
    output: Optional[Path] = None
    api_url: Optional[str] = None
    git_url: Optional[str] = None
    checkpoint: Optional[Path] = None
    test_command: Optional[str] = None
    sandbox_network: str = "none"
    environ: Optional[dict[str, str]] = None  # where tokens are looked up (default os.environ)


@dataclass
class ResolveOutcome:
    out_dir: Path
    issue: Issue
    repository: Repository
    episode: Any  # EpisodeResult
    summary_path: Path
    final_check: Optional[TestRun]
    pull_request: Any = None  # OpenedPullRequest
    lines: list[str] = field(default_factory=list)  # the short summary printed at the end


# -- the steps ---------------------------------------------------------------------------------------


def fetch(ref: IssueRef, gh: GitHubClient) -> tuple[Repository, Issue]:
    """The repository (first, so a missing one is named as such) and the issue with all its comments."""
    repo = gh.repository(ref.owner, ref.repo)
    return repo, gh.issue(ref.owner, ref.repo, ref.number)


def task_text(ref: IssueRef, issue: Issue, max_chars: int) -> str:
    """What the agent is given: title, body and comments, oldest first; middle comments dropped beyond the cap."""
    labels = f" Labels: {', '.join(issue.labels)}." if issue.labels else ""
    head = (f"{issue.title.strip()}\n\nIssue #{issue.number} of {ref.full_name} ({issue.html_url or ref.url}), "
            f"opened by @{issue.author}.{labels}\n\n{issue.body.strip() or '(no description)'}")
    if len(head) > max_chars // 2 and issue.comments:
        head = head[: max_chars // 2] + "\n[... rest of the description cut ...]"
    blocks = [f"### @{c.author} ({c.created_at[:10] or 'undated'})\n{c.body.strip()}" for c in issue.comments]
    room = max_chars - len(head) - 200
    order = [i for pair in zip(range(len(blocks)), reversed(range(len(blocks)))) for i in pair]
    kept: set[int] = set()
    for i in order[: len(blocks)] if len(blocks) > 1 else range(len(blocks)):
        if i in kept:
            continue
        if len(blocks[i]) + 2 > room:
            break
        kept.add(i)
        room -= len(blocks[i]) + 2
    parts = [head]
    if blocks:
        parts.append(f"## Comments ({len(blocks)})")
        gap = 0
        for i, block in enumerate(blocks):
            if i not in kept:
                gap += 1
                continue
            if gap:
                parts.append(f"[... {gap} comment{'s' if gap > 1 else ''} left out ...]")
                gap = 0
            parts.append(block)
        if gap:
            parts.append(f"[... {gap} comment{'s' if gap > 1 else ''} left out ...]")
    return "\n\n".join(parts)[: max_chars + 400] + "\n"


def clone(ref: IssueRef, repo: Repository, token: Optional[Token], out_dir: Path, repo_dir: Optional[Path],
          git_url: Optional[str], allowed_hosts: set[str],
          say: Callable[[str], None] = lambda line: None) -> tuple[GitWorkspace, str]:
    """The episode's workspace: a clone of ``repo_dir`` or of the repository; (workspace, where it came from)."""
    dest = out_dir / "workspace"
    if repo_dir is not None:
        GitWorkspace(repo_dir)  # a git working tree, or a one-line error
        origin = _origin_of(Path(repo_dir))
        if origin and not re.search(rf"[/:]{re.escape(ref.full_name)}(\.git)?/?$", origin, re.I):
            say(f"warning: --repo-dir's origin is {strip_credentials(origin)}, not {ref.full_name}")
        return GitWorkspace.clone(repo_dir, dest), str(Path(repo_dir).resolve())
    url = f"{git_url}/{repo.full_name}.git" if git_url else repo.clone_url
    if not url:
        raise ResolveError(f"the API gave no clone URL for {repo.full_name}; pass --git-url or --repo-dir")
    with git_credentials(token, url, allowed_hosts) as env:
        try:
            return GitWorkspace.clone(url, dest, env=env), url
        except WorkspaceError as exc:
            hint = ""
            if "could not read Username" in str(exc) or "401" in str(exc):
                if token is None:
                    hint = f"; the repository needs credentials: {token_hint(ref.host)}"
                elif host_of(url) not in allowed_hosts:
                    hint = (f"; the token is only given to {', '.join(sorted(allowed_hosts))}, not to "
                            f"{host_of(url)}: pass --git-url to clone from elsewhere")
                else:
                    hint = f"; the {token.source} token was not accepted"
            raise ResolveError(f"{exc}{hint}") from None


def _origin_of(repo_dir: Path) -> Optional[str]:
    """remote.origin.url of the user's own checkout (read from its config file, no git run in it)."""
    config = Path(repo_dir) / ".git" / "config"
    if not config.is_file():
        return None
    proc = run_git(["config", "--file", str(config), "--get", "remote.origin.url"], git_dir=None, check=False)
    return proc.stdout.decode("utf-8", "replace").strip() or None


def final_check(sandbox, command: str, timeout: float) -> TestRun:
    """The test command once more on the changed tree, by LoopCoder itself (not reported by the model)."""
    res = sandbox.exec(command, timeout=timeout)
    found = _PYTEST_SUMMARY.findall(res.output)
    ut = _UNITTEST.findall(res.output)
    if found:
        result = found[-1].strip().rstrip(",")
    elif ut:
        ran, verdict, detail = ut[-1]
        result = f"Ran {ran} tests: {verdict}" + (f" ({detail})" if detail else "")
    else:
        result = "timed out" if res.timed_out else f"exit code {res.exit_code}"
    return TestRun("final check", command, res.exit_code == 0 and not res.timed_out, result)


def output_dir(output: Optional[Path], ref: IssueRef) -> Path:
    path = output or Path("loopcoder-runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{ref.owner}-{ref.repo}-{ref.number}"
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"output folder {path} is not empty; choose a new one with --output")
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- the job -----------------------------------------------------------------------------------------


def resolve(opts: ResolveOptions, say: Callable[[str], None] = lambda line: None, status=None,
            listeners: tuple = ()) -> ResolveOutcome:
    """Run the whole job; ResolveError (one line) for anything a user must fix. ``status(text)`` is a context
    manager for long steps (a spinner); ``listeners`` see every trajectory event."""
    from contextlib import nullcontext

    from loopcoder.agent import ModelClient, Task, run_episode
    from loopcoder.runtime import open_sandbox
    from loopcoder.runtime.config import load_runtime_config
    from loopcoder.runtime.engine import connect_docker
    from loopcoder.scenarios.agent_cli import start_embedded_server
    from loopcoder.scenarios.resolve.environment import detect_environment, prepare_image
    from loopcoder.scenarios.resolve.pullrequest import check_can_open, open_pull_request, pull_request_body

    status = status or (lambda text: nullcontext())
    cfg = opts.config
    ref = parse_issue_url(opts.url)
    api_url = base_url("--api-url", opts.api_url) if opts.api_url else ref.default_api_url()
    git_url = base_url("--git-url", opts.git_url) if opts.git_url else None
    if opts.repo_dir is not None and not Path(opts.repo_dir).is_dir():
        raise ResolveError(f"--repo-dir {opts.repo_dir} is not a folder")
    token = find_token(ref.host, opts.environ)
    # git hosts the token may be given to: never one that only an API answer named
    allowed_hosts = {ref.host, host_of(api_url)} | ({host_of(git_url)} if git_url else set())
    with GitHubClient(api_url, token, cfg.github, web_host=ref.host, on_wait=say) as gh:
        with status(f"fetching {ref.full_name}#{ref.number}"):
            repo, issue = fetch(ref, gh)
        n = len(issue.comments)
        say(f"issue {ref.full_name}#{ref.number}: {clean(issue.title, 120)} ({issue.state}"
            f"{', locked' if issue.locked else ''}, {n} comment{'' if n == 1 else 's'})")
        if opts.open_pr:
            check_can_open(issue, ref, token)
        out_dir = output_dir(opts.output, ref)
        (out_dir / "issue.json").write_text(json.dumps(asdict(issue), indent=1) + "\n")
        with status(f"cloning {repo.full_name}"):
            ws, source = clone(ref, repo, token, out_dir, opts.repo_dir, git_url, allowed_hosts, say)
        say(f"workspace {ws.path} at {ws.base_commit[:12]}")

        runtime_cfg = load_runtime_config()
        runtime_cfg.sandbox.network = opts.sandbox_network
        plan = detect_environment(ws.path)
        for line in plan.lines():
            say(f"detected {line}")
        client = None
        if runtime_cfg.sandbox.backend == "docker":
            client = connect_docker()
            with status("preparing the environment image") as spinner:
                env = prepare_image(client, plan, runtime_cfg.images, build=cfg.environment.build_image,
                                    progress=(lambda line: spinner.update(line[:100])) if spinner else None)
        else:
            env = prepare_image(None, plan, runtime_cfg.images, build=False)
        for line in env.failures + env.notes:
            say(clean(line, 300))
        say(f"sandbox image: {env.line()}")
        test_command = opts.test_command or env.test_command
        test_source = "--test-command" if opts.test_command else env.test_source
        text = task_text(ref, issue, cfg.task.max_chars) + _sandbox_note(env, opts.sandbox_network)
        (out_dir / "task.md").write_text(text)

        agent_cfg = opts.agent_config
        server = None
        try:
            if not agent_cfg.model.url:
                server = start_embedded_server(opts.checkpoint or agent_cfg.default_checkpoint)
                agent_cfg.model.url = server.url + "/v1"
            model = ModelClient(agent_cfg.model)
            with status("starting the sandbox"):
                sandbox = open_sandbox(ws.path, runtime_cfg, image=env.image, client=client,
                                       labels={"loopcoder.purpose": "resolve"})
            final = None
            try:
                result = run_episode(Task(text=text, workspace=ws, repo=source, test_command=test_command),
                                     model, agent_cfg, out_dir, sandbox=sandbox, listeners=listeners)
                patch_text = Path(result.patch.path).read_text() if result.patch.path else ""
                if (cfg.environment.final_check and test_command and patch_text
                        and result.reason != "interrupted"):
                    with status(f"final check: {test_command}"):
                        final = final_check(sandbox, test_command, cfg.environment.final_check_timeout_s)
            finally:
                sandbox.close()
            model_name = model.name
        finally:
            if server is not None:
                server.stop()

        summary = summary_markdown(issue_ref=ref, issue=issue, result=result, model_name=model_name,
                                   base_commit=ws.base_commit, branch=repo.default_branch, env_lines=plan.lines(),
                                   env_result_line=env.line(), test_command=test_command, test_source=test_source,
                                   env_failures=env.failures + env.notes, final=final, patch_text=patch_text)
        summary_path = out_dir / "summary.md"
        summary_path.write_text(summary)
        outcome = ResolveOutcome(out_dir, issue, repo, result, summary_path, final)
        record = {"issue": ref.url, "repository": repo.full_name, "source": source, "base_commit": ws.base_commit,
                  "environment": {"detected": plan.lines(), "image": env.image, "kind": env.kind,
                                  "failures": env.failures, "notes": env.notes, "test_command": test_command},
                  "stop_reason": result.reason, "patch": result.patch.model_dump(),
                  "changes": [asdict(c) for c in diffstat(patch_text)],
                  "final_check": asdict(final) if final else None, "pull_request": None}
        _write_record(out_dir, record)
        if opts.open_pr and result.reason != "interrupted":
            if result.reason != "submitted" or not patch_text:
                why = "the agent made no change" if not patch_text else f"the agent did not submit ({result.reason})"
                raise _PullRequestNotOpened(outcome, f"no pull request opened: {why}; the patch and summary are in "
                                                     f"{out_dir}")
            try:
                opened = open_pull_request(gh, ws, repo, issue, ref, patch_text,
                                           pull_request_body(summary, issue, cfg.pull_request.max_body_chars),
                                           token, cfg.pull_request, git_url, say, allowed_hosts)
            except ResolveError as exc:
                raise _PullRequestNotOpened(outcome, f"{exc}; the patch and summary are in {out_dir}") from None
            outcome.pull_request = opened
            pr = {"number": opened.pull.number, "url": opened.pull.html_url, "draft": opened.pull.draft,
                  "head": opened.pull.head, "base": opened.pull.base, "branch": opened.branch,
                  "commit": opened.commit, "pushed_to": opened.pushed_to, "fork_created": opened.fork_created}
            (out_dir / "pull_request.json").write_text(json.dumps(pr, indent=1) + "\n")
            record["pull_request"] = pr
            _write_record(out_dir, record)
    return outcome


class _PullRequestNotOpened(ResolveError):
    """--open-pr failed after the run; ``outcome`` holds what was written."""

    def __init__(self, outcome: ResolveOutcome, message: str):
        super().__init__(message)
        self.outcome = outcome


def _write_record(out_dir: Path, record: dict) -> None:
    (out_dir / "resolve.json").write_text(json.dumps(record, indent=1) + "\n")


def _sandbox_note(env, network: str) -> str:
    """A few lines for the agent when its sandbox lacks something it may look for."""
    lines = []
    if env.failures and network == "none":
        lines.append("The repository's dependencies could not all be installed in the sandbox image, and the "
                     "sandbox has no network, so installing packages will fail: work with what is installed.")
    elif network != "none":
        lines.append("The sandbox has network access: you may install missing packages (pip install ...).")
    return ("\n## Sandbox\n\n" + "\n".join(lines) + "\n") if lines else ""
