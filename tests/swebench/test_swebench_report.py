"""The static HTML report of a run folder, parsed with an HTML parser (no browser, no network, no Docker).

The run folder is made by the real pieces: an agent episode (no sandbox) against a scripted model over HTTP
whose answers, reasoning and tool arguments carry hostile HTML; status files written by RunDir; the eval
reports written by `batch.write_reports`. The report must show every instance, link each to a readable
trajectory page, show the model's text as text, and contain nothing a browser would run or fetch.
"""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from loopcoder.agent import ModelClient, Task, load_agent_config, run_episode
from loopcoder.runtime.config import load_runtime_config
from loopcoder.runtime.workspace import GitWorkspace
from loopcoder.scenarios.cli import main
from loopcoder.scenarios.swebench.batch import write_reports
from loopcoder.scenarios.swebench.config import load_swebench_config
from loopcoder.scenarios.swebench.evaluation import EvalContext, InstanceResult
from loopcoder.scenarios.swebench.report import write_report
from loopcoder.scenarios.swebench.rundir import InstanceStatus, RunDir, safe_name

from instance_model import HOSTILE, InstanceModel, call
from run_support import git

SOLVED, FAILED, ODD = "acme__widget-1", "acme__widget-2", "../../evil<b>id</b>"
PROBLEM = "The widget breaks on <b>bold</b> input & more.\nSteps: run `widget --bold`."


class Page(HTMLParser):
    """Tags with their attributes, text, and per table row its text and first link."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.rows: list[dict] = []
        self.ids: dict[str, list[str]] = {}  # element id -> its text
        self._row = None
        self._open_ids: list[tuple[str, str]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "tr" and "instance" in (attrs.get("class") or "").split():
            self._row = {"id": attrs.get("data-instance"), "href": None, "text": []}
            self.rows.append(self._row)
        if tag == "a" and self._row is not None and self._row["href"] is None:
            self._row["href"] = attrs.get("href")
        if attrs.get("id"):
            self._open_ids.append((tag, attrs["id"]))
            self.ids.setdefault(attrs["id"], [])

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None
        if self._open_ids and self._open_ids[-1][0] == tag:
            self._open_ids.pop()

    def handle_data(self, data):
        self.text.append(data)
        if self._row is not None:
            self._row["text"].append(data)
        for _, ident in self._open_ids:
            self.ids[ident].append(data)

    def classes(self) -> list[str]:
        return [c for _, a in self.tags for c in (a.get("class") or "").split()]

    def all_text(self) -> str:
        return "".join(self.text)


def assert_inert(page: Page) -> None:
    """Nothing a browser would run or fetch: no script/iframe/object/img elements, no event handlers, no
    javascript: links, no remote URLs, and a CSP that forbids them anyway."""
    tags = [t for t, _ in page.tags]
    assert not {"script", "iframe", "object", "embed", "img", "form", "base", "link"} & set(tags)
    for tag, attrs in page.tags:
        assert not [k for k in attrs if k.startswith("on")], (tag, attrs)
        for key in ("href", "src", "action"):
            value = (attrs.get(key) or "").strip().lower()
            assert not value.startswith(("javascript:", "data:", "http:", "https:", "//")), (tag, attrs)
    csp = [a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]


@pytest.fixture
def run_dir(tmp_path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "notes.txt").write_text("line one\nthe bug is here\nline three\n")
    git(repo, "add", "notes.txt")
    git(repo, "commit", "-qm", "base")
    inst = {"instance_id": SOLVED, "problem_statement": PROBLEM}
    plan = {"steps": [{"goal": f"fix it {HOSTILE}", "files": ["notes.txt"], "verify": "read it"}]}
    script = {
        "planner": [call("view", {"path": "notes.txt"}, content=f"Let me look. {HOSTILE}", reasoning=f"Hmm {HOSTILE}"),
                    call("write_plan", plan)],
        "executor": [call("str_replace", {"path": "notes.txt", "old_str": "the bug is here\n",
                                          "new_str": f"fixed {HOSTILE}\n"}),
                     call("no_such_tool", {"x": HOSTILE}),
                     call("create", {"path": "added.md", "content": f"# new\n{HOSTILE}\n"}),
                     call("update_plan", {"step": 1, "status": "done", "note": HOSTILE}),
                     call("submit", {"summary": f"done {HOSTILE}"})],
    }
    run = tmp_path / "run"
    rd = RunDir(run)
    rd.start({"run_id": "r1", "dataset": "mini", "model_name_or_path": "scripted-swe",
              "instances": [SOLVED, FAILED, ODD]}, resume=False)
    with InstanceModel([inst], {SOLVED: script}) as model:
        cfg = load_agent_config(None, [f"model.url={model.url}", "fsync=false"])
        ws = GitWorkspace.clone(repo, tmp_path / "ws")
        result = run_episode(Task(PROBLEM, ws, repo=str(repo)), ModelClient(cfg.model), cfg,
                             rd.instance_dir(SOLVED), sandbox=None)
    assert result.reason == "submitted"
    b = result.budget
    rd.write_status(InstanceStatus(instance_id=SOLVED, state="done", reason="submitted", attempt=1,
                                   steps=result.steps, tokens_in=b["input_tokens"], tokens_out=b["output_tokens"],
                                   seconds=1.5, patch_files=result.patch.files, prediction=True))
    rd.append_prediction({"instance_id": SOLVED, "model_name_or_path": "scripted-swe",
                          "model_patch": Path(result.patch.path).read_text()})
    rd.write_status(InstanceStatus(instance_id=FAILED, state="failed", reason="image_build_failed",
                                   failure_kind="infrastructure", detail=f"build said {HOSTILE}", attempt=1))
    rd.write_status(InstanceStatus(instance_id=ODD, state="interrupted", reason="interrupted", attempt=1))
    ctx = EvalContext(load_swebench_config(), load_runtime_config(), None, run, "ev1")
    results = [InstanceResult(instance_id=SOLVED, model_name_or_path="scripted-swe", status="resolved",
                              swebench_resolved=True, junit_resolved=True),
               InstanceResult(instance_id=FAILED, model_name_or_path="scripted-swe", status="infra_failure",
                              infra_reason="image_build_failed", detail=f"no image {HOSTILE}")]
    preds = {i: {"instance_id": i, "model_name_or_path": "scripted-swe", "model_patch": "x"} for i in (SOLVED, FAILED)}
    write_reports([{"instance_id": SOLVED}, {"instance_id": FAILED}], preds, results, ctx)
    return run


def test_report_has_one_row_per_instance_each_linking_to_its_trajectory(run_dir):
    path = write_report(run_dir)
    page = Page(path.read_text())
    assert_inert(page)
    assert [r["id"] for r in page.rows] == [SOLVED, FAILED, ODD]  # run.json's order
    for row in page.rows:
        target = (run_dir / unquote(row["href"])).resolve()
        assert target.is_file() and target.parent == (run_dir / "report").resolve(), row
    assert unquote(page.rows[2]["href"]) == f"report/{safe_name(ODD)}.html" and safe_name(ODD).startswith("id-")
    solved, failed, odd = ("".join(r["text"]) for r in page.rows)
    assert "done" in solved and "submitted" in solved and "resolved" in solved
    assert "failed" in failed and "image_build_failed" in failed and "infra_failure" in failed
    assert HOSTILE in failed  # the sandbox's text, shown as text
    assert "interrupted" in odd and ODD in odd
    assert "resolved 1/2" in "".join(page.ids["resolved"])
    # an eval row links to its official log files, relative to the run folder
    hrefs = [a.get("href") for t, a in page.tags if t == "a"]
    assert "logs/run_evaluation/ev1/scripted-swe/acme__widget-1/test_output.txt" in hrefs


def test_trajectory_page_shows_task_plan_thoughts_calls_diffs_results_and_patch_as_text(run_dir):
    write_report(run_dir)
    page = Page((run_dir / "report" / f"{SOLVED}.html").read_text())
    assert_inert(page)
    assert PROBLEM in "".join(page.ids["task"])
    assert "[x] fix it" in "".join(page.ids["plan"]) and HOSTILE in "".join(page.ids["plan"])
    classes = page.classes()
    for kind in ("answer", "call", "result", "plan", "stop", "reasoning", "phase"):
        assert kind in classes, kind
    text = page.all_text()
    assert f"Hmm {HOSTILE}" in text and f"Let me look. {HOSTILE}" in text  # thinking and content, as text
    assert "unknown tool 'no_such_tool'" in text  # the error the model was shown
    assert "-the bug is here" in text and f"+fixed {HOSTILE}" in text  # the str_replace as a diff
    assert "add" in classes and "del" in classes and "hunk" in classes
    patch = "".join(page.ids["patch"])
    assert "+++ b/notes.txt" in patch and "+++ b/added.md" in patch and f"+fixed {HOSTILE}" in patch
    assert "submitted" in "".join(page.ids["stop"])
    back = [a["href"] for t, a in page.tags if t == "a" and a.get("href", "").endswith("report.html")]
    assert back == ["../report.html"]


def test_pages_of_instances_without_a_trajectory_say_what_happened(run_dir):
    write_report(run_dir)
    page = Page((run_dir / "report" / f"{FAILED}.html").read_text())
    assert_inert(page)
    status = "".join(page.ids["status"])
    assert "image_build_failed" in status and HOSTILE in status and "infra_failure" in status
    assert "empty (no change)" in "".join(page.ids["patch"])


def test_report_command_writes_the_report_and_refuses_a_missing_folder(run_dir, capsys):
    main(["swebench", "report", str(run_dir)])
    assert capsys.readouterr().out.strip() == f"report: {run_dir / 'report.html'}"
    with pytest.raises(SystemExit) as exc:
        main(["swebench", "report", str(run_dir / "nope")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: run folder not found: {run_dir / 'nope'}"
