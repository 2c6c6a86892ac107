"""Rebuild the bundled mini SWE-bench dataset from PyPI sdists (recipes.yaml + patches/).

    .venv/bin/python benchmarks/swebench_mini/build.py [--out scenarios/swebench/data] [--cache DIR]

For each repository: ``pip download --no-deps --no-binary :all: PKG==VER`` of every release in its
history and of the release with the fix; one commit per history release (fixed author, dates from the
recipe, so the commit ids are the same on every rebuild); a git bundle ``OWNER__NAME.bundle`` holding
only ``main`` at the base commit (no tags, no later objects: the fix cannot leak through ``git log
--all``). For each instance: the gold and test patches must apply to the base commit and every line
they add must exist in the fixed release; then the test files of the test patch run in a sandbox from
the instance's environment image, with the test patch, before and after the gold patch:
FAIL_TO_PASS = failing before and passing after, PASS_TO_PASS = passing both times. At least one
FAIL_TO_PASS test is required. Writes ``mini.jsonl`` in the classic SWE-bench field format.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))  # noqa: E402 -- run as a script from a checkout
from loopcoder.scenarios.swebench.sdists import commit_all, copy_tree, download, extract, git  # noqa: E402

AUTHOR = ("LoopCoder mini-dataset builder", "mini-dataset@loopcoder.invalid")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "scenarios/swebench/data")
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache/swebench-mini")
    ap.add_argument("--skip-tests", action="store_true", help="keep FAIL_TO_PASS/PASS_TO_PASS of the existing mini.jsonl")
    args = ap.parse_args(argv)
    recipes = yaml.safe_load((HERE / "recipes.yaml").read_text())
    sdists = args.cache / "sdists"
    sdists.mkdir(parents=True, exist_ok=True)
    (args.out / "repos").mkdir(parents=True, exist_ok=True)
    old = {}
    if args.skip_tests and (args.out / "mini.jsonl").is_file():
        old = {r["instance_id"]: r for r in map(json.loads, (args.out / "mini.jsonl").read_text().splitlines())}
    rows = []
    with tempfile.TemporaryDirectory(prefix="swebench-mini-") as tmp:
        tmp = Path(tmp)
        bases = {}
        for repo, rc in recipes["repos"].items():
            versions = [h["version"] for h in rc["history"]] + [rc["fixed_in"]]
            trees = {v: extract(download(rc["package"], v, sdists), tmp / "src" / f"{rc['package']}-{v}") for v in versions}
            drop = recipes.get("drop_always", []) + rc.get("drop", [])
            git_dir = tmp / "repos" / repo.replace("/", "__")
            bases[repo] = import_history(git_dir, rc, trees, drop)
            bundle = args.out / "repos" / f"{repo.replace('/', '__')}.bundle"
            bundle.unlink(missing_ok=True)
            git(git_dir, "bundle", "create", str(bundle), "HEAD", "main")  # HEAD: clones check out main
            print(f"{repo}: base {bases[repo][:12]} ({rc['history'][-1]['version']}), bundle {bundle.stat().st_size} bytes")
            rc["_fixed_tree"], rc["_git"], rc["_base_version"] = trees[rc["fixed_in"]], git_dir, rc["history"][-1]["version"]
        for inst in recipes["instances"]:
            rc = recipes["repos"][inst["repo"]]
            iid = inst["instance_id"]
            gold = (HERE / "patches" / f"{iid}.gold.patch").read_text()
            test = (HERE / "patches" / f"{iid}.test.patch").read_text()
            for kind, patch in (("gold", gold), ("test", test)):
                check_faithful(iid, kind, patch, rc["_fixed_tree"])
            row = {
                "repo": inst["repo"], "instance_id": iid, "base_commit": bases[inst["repo"]], "patch": gold,
                "test_patch": test, "problem_statement": inst["problem_statement"],
                "hints_text": inst.get("hints_text", ""), "created_at": inst["created_at"],
                "version": ".".join(str(rc["_base_version"]).split(".")[:2]),
                "environment_setup_commit": bases[inst["repo"]],
            }
            if args.skip_tests and iid in old:
                row["FAIL_TO_PASS"], row["PASS_TO_PASS"] = old[iid]["FAIL_TO_PASS"], old[iid]["PASS_TO_PASS"]
            else:
                f2p, p2p = harvest_tests(row, args.out / "repos")
                row["FAIL_TO_PASS"], row["PASS_TO_PASS"] = json.dumps(f2p), json.dumps(p2p)
                print(f"{iid}: {len(f2p)} FAIL_TO_PASS, {len(p2p)} PASS_TO_PASS")
            rows.append(row)
    with open(args.out / "mini.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"wrote {len(rows)} instances to {args.out / 'mini.jsonl'}")
    return 0


def import_history(git_dir: Path, rc: dict, trees: dict, drop: list[str]) -> str:
    git_dir.mkdir(parents=True)
    git(git_dir, "init", "-q", "-b", "main")
    for h in rc["history"]:
        for entry in git_dir.iterdir():
            if entry.name != ".git":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        copy_tree(trees[h["version"]], git_dir, drop)
        commit_all(git_dir, f"{rc['package']} {h['version']}\n\nImported from the {rc['package']}=={h['version']} sdist on PyPI.",
                   AUTHOR, h["date"])
    return git(git_dir, "rev-parse", "HEAD").strip()


def check_faithful(iid: str, kind: str, patch: str, fixed_tree: Path) -> None:
    """Every line ``patch`` adds must exist in the same file of the fixed release."""
    current = None
    for line in patch.splitlines():
        if line.startswith("+++ b/"):
            current = (fixed_tree / line[6:]).read_text().splitlines()
        elif line.startswith("+") and not line.startswith("+++") and line[1:].strip():
            if line[1:] not in current:
                raise SystemExit(f"{iid} {kind} patch adds a line the fixed release lacks: {line[1:]!r}")


def harvest_tests(row: dict, repos_dir: Path) -> tuple[list[str], list[str]]:
    """FAIL_TO_PASS and PASS_TO_PASS from two runs of the test files in the instance's sandbox."""
    sys.path.insert(0, str(ROOT))
    from swebench.harness.log_parsers import PARSER_REGISTRY

    from loopcoder.runtime.config import load_runtime_config
    from loopcoder.runtime.docker_sandbox import DockerSandbox
    from loopcoder.runtime.engine import connect_docker
    from loopcoder.runtime.images import build_env_image
    from loopcoder.runtime.workspace import GitWorkspace
    from loopcoder.scenarios.swebench.config import load_swebench_config
    from loopcoder.scenarios.swebench.dataset import find_repo_source
    from loopcoder.scenarios.swebench.environment import resolve_environment

    cfg, rcfg = load_swebench_config(), load_runtime_config()
    probe = dict(row, FAIL_TO_PASS="[]", PASS_TO_PASS="[]")
    env = resolve_environment(probe, cfg)
    client = connect_docker()
    image = build_env_image(client, env.image_spec, rcfg.images, progress=None)
    maps = []
    for with_gold in (False, True):
        with tempfile.TemporaryDirectory(prefix="swebench-mini-tests-") as tmp:
            ws = GitWorkspace.clone(find_repo_source(row, repos_dir), Path(tmp) / "testbed", commit=row["base_commit"])
            ws.apply_patch(row["test_patch"])
            if with_gold:
                ws.apply_patch(row["patch"])
            cmd = f"cd /testbed && {env.spec.test_cmd} " + " ".join(env.test_directives)
            with DockerSandbox(ws.path, config=rcfg.sandbox.model_copy(update={"output_limit_bytes": 20_000_000}),
                               image=image.tag, client=client) as sb:
                out = sb.exec(cmd, timeout=900).output
            maps.append(PARSER_REGISTRY[env.log_parser](out, None))
    before, after = maps
    ok = ("PASSED", "XFAIL")
    f2p = sorted(t for t, s in after.items() if s in ok and before.get(t) not in ok)
    p2p = sorted(t for t, s in after.items() if s in ok and before.get(t) in ok)
    if not f2p:
        raise SystemExit(f"{row['instance_id']}: no test fails before the gold patch and passes after it")
    return f2p, p2p


if __name__ == "__main__":
    sys.exit(main())
