"""`loopcoder nano synth`: SWE-bench tasks made by injecting bugs into real packages (the SWE-smith recipe).

Per package of the recipe (``recipes.yaml``), in a work folder that keeps every finished step (a crash
or a rerun loses nothing):
1. the sdist from the package index, copied without dropped paths (``tree/``);
2. one test run in a sandbox (the SWE-bench environment image, no network) with the ``nano_trace``
   plugin: which tests pass on the clean tree, and which source lines each test file executes
   (``baseline.json``);
3. mutants (``mutate.py``) on covered lines of covered functions, in a seeded order that takes the
   operator kinds in turn; each is validated in one long-lived sandbox by running only the test files
   that execute the mutated line: kept when 1..``max_fail`` tests that passed on the clean tree fail and
   all others still pass, within the time limit (``results.jsonl``, one line per mutant, appended);
   mutants failing the same tests in the same function are duplicates; at most ``per_function`` tasks
   per function;
4. one instance per kept mutant: a root commit of the mutated tree (its history never holds the clean
   code), a bundle ``<instance_id>.bundle`` holding only that commit, the gold patch (the reverse of the
   mutation, from git), an empty test patch (the tests are already in the tree), FAIL_TO_PASS,
   PASS_TO_PASS (every other test of the test files run) and an issue-style problem statement.

Outputs in ``--out``: ``train.jsonl``, ``heldout.jsonl``, ``repos/*.bundle``, ``manifest.json``.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from loopcoder.scenarios.nano.mutate import KINDS, Mutation, candidates, dump_ast, is_valid
from loopcoder.scenarios.nano.problem import failure_sections, module_name, statement
from loopcoder.scenarios.swebench.dataset import repo_key
from loopcoder.scenarios.swebench.errors import DatasetError
from loopcoder.scenarios.swebench.sdists import commit_all, copy_tree, download, extract, git

HERE = Path(__file__).resolve().parent
RECIPE = HERE / "recipes.yaml"
AUTHOR = ("LoopCoder task synthesizer", "nano-synth@loopcoder.invalid")
PLUGIN = HERE / "nano_trace.py"
SANDBOX_TMP = "/tmp/nano"
PASSING = ("PASSED", "XFAIL")
_TEST_DIRS = {"tests", "test", "testing"}
Progress = Callable[[str], None]


@dataclass
class PackageRecipe:
    name: str
    repo: str
    version: str
    split: str
    drop: list[str] = field(default_factory=list)
    target: int = 17
    max_attempts: int = 70
    max_test_seconds: float | None = None  # traced baseline seconds of the test files one mutant may run


    @property
    def key(self) -> str:
        return repo_key(self.repo)


@dataclass
class Recipe:
    packages: dict[str, PackageRecipe]
    date: str
    drop_always: list[str]

    def split(self, name: str) -> list[PackageRecipe]:
        return [p for p in self.packages.values() if p.split == name]


def load_recipe(path: Path | None = None) -> Recipe:
    """The recipe YAML; DatasetError (one line) when it is malformed or mixes a package into both splits."""
    path = Path(path or RECIPE)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetError(f"cannot read recipe {path}: {exc}".splitlines()[0]) from None
    defaults = raw.get("defaults") or {}
    packages = {}
    for name, entry in (raw.get("packages") or {}).items():
        if entry.get("split") not in ("train", "heldout"):
            raise DatasetError(f"recipe {path}: package {name}: split must be train or heldout")
        for req in ("repo", "version"):
            if not entry.get(req):
                raise DatasetError(f"recipe {path}: package {name}: {req} is missing")
        packages[name] = PackageRecipe(name=name, repo=entry["repo"], version=str(entry["version"]),
                                       split=entry["split"], drop=list(entry.get("drop") or []),
                                       target=int(entry.get("target", defaults.get("target", 17))),
                                       max_attempts=int(entry.get("max_attempts", defaults.get("max_attempts", 70))),
                                       max_test_seconds=entry.get("max_test_seconds"))
    repos = Counter(p.repo for p in packages.values())
    if any(n > 1 for n in repos.values()):
        raise DatasetError(f"recipe {path}: a repository appears twice: {[r for r, n in repos.items() if n > 1]}")
    return Recipe(packages=packages, date=str(raw.get("date", "2026-11-01T12:00:00Z")),
                  drop_always=list(raw.get("drop_always") or []))


def is_test_path(rel: str) -> bool:
    parts = rel.split("/")
    name = parts[-1]
    return (any(p in _TEST_DIRS for p in parts[:-1]) or name.startswith("test_") or name.endswith("_test.py")
            or name in ("conftest.py", "setup.py", "noxfile.py", "fabfile.py", "tasks.py"))


def source_files(tree: Path) -> list[str]:
    """Package source files (relative paths) that mutations may touch: not tests, not build scripts."""
    out = []
    for p in sorted(tree.rglob("*.py")):
        rel = p.relative_to(tree).as_posix()
        if is_test_path(rel) or "egg-info" in rel or rel.split("/")[-1] in ("_version.py", "version.py", "__main__.py"):
            continue
        out.append(rel)
    return out


# -- the sandbox ---------------------------------------------------------------------------------------


def gradable_tests(passing: set[str], test_files: list[str]) -> list[str]:
    """The passing tests of ``test_files`` that an instance may name in FAIL_TO_PASS / PASS_TO_PASS: only
    tests in Python files. The graders' test run (swebench's directives for an empty test patch) never
    reports a doctest collected from a README (ordered-set's ``README.md::README.md``), so an instance
    naming one could never resolve."""
    return sorted(t for t in passing if t.split("::")[0] in test_files and t.split("::")[0].endswith(".py"))


class PackageSandbox:
    """One sandbox (SWE-bench environment image, no network) on a copy of a package's clean tree."""

    def __init__(self, tree: Path, repo: str, version: str, client=None) -> None:
        from loopcoder.runtime.config import load_runtime_config
        from loopcoder.runtime.docker_sandbox import DockerSandbox
        from loopcoder.runtime.engine import connect_docker
        from loopcoder.runtime.images import build_env_image
        from loopcoder.scenarios.swebench.config import load_swebench_config
        from loopcoder.scenarios.swebench.environment import resolve_environment

        cfg, rcfg = load_swebench_config(), load_runtime_config()
        probe = {"repo": repo, "instance_id": "probe", "base_commit": "0" * 40, "version": version,
                 "test_patch": "", "FAIL_TO_PASS": "[]", "PASS_TO_PASS": "[]"}
        env = resolve_environment(probe, cfg)
        self.test_cmd = env.spec.test_cmd
        self.client = client or connect_docker()
        image = build_env_image(self.client, env.image_spec, rcfg.images, progress=None)
        self.tmp = Path(tempfile.mkdtemp(prefix="nano-synth-"))
        self.root = self.tmp / "testbed"
        shutil.copytree(tree, self.root)
        sb_cfg = rcfg.sandbox.model_copy(update={"network": "none", "output_limit_bytes": 20_000_000,
                                                 "memory": cfg.sandbox_memory, "cpus": 1.0, "keep_background": False})
        self.sb = DockerSandbox(self.root, config=sb_cfg, image=image.tag,
                                labels={"loopcoder.purpose": "nano-synth"}, client=self.client)
        self.sb.exec(f"mkdir -p {SANDBOX_TMP}", timeout=60)
        self.sb.write_file(f"{SANDBOX_TMP}/nano_trace.py", PLUGIN.read_bytes())
        self.image = image.tag

    def close(self) -> None:
        try:
            self.sb.close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def pytest(self, args: str, timeout: float, tb: str = "short", extra_env: str = "") -> tuple[str, bool, float]:
        """(output, timed out, seconds) of the spec's test command with ``args`` (``--tb`` set to ``tb``)."""
        cmd = self.test_cmd.replace("--tb=no", f"--tb={tb}")
        t = int(timeout)
        res = self.sb.exec(f"cd /testbed && {extra_env} timeout -k 5 {t} {cmd} {args}", timeout=t + 60)
        return res.output, res.timed_out or res.exit_code in (124, 137), res.duration_s

    def baseline(self, sources: list[str]) -> dict:
        """Test statuses on the clean tree and the lines each test file executes."""
        from swebench.harness.log_parsers import PARSER_REGISTRY

        self.sb.write_file(f"{SANDBOX_TMP}/files.txt", "".join(f"/testbed/{s}\n" for s in sources))
        env = (f"PYTHONPATH={SANDBOX_TMP}:$PYTHONPATH NANO_TRACE_FILES={SANDBOX_TMP}/files.txt "
               f"NANO_TRACE_OUT={SANDBOX_TMP}/trace.json")
        out, timed_out, secs = self.pytest("-p nano_trace --continue-on-collection-errors", 900, tb="no",
                                           extra_env=env)
        if timed_out:
            raise DatasetError("the clean test suite ran past 900 s")
        statuses = PARSER_REGISTRY["parse_log_pytest"](out, None)
        try:
            trace = json.loads(self.sb.read_file(f"{SANDBOX_TMP}/trace.json"))
        except Exception as exc:  # noqa: BLE001 -- no trace file: the run died before the session ended
            raise DatasetError(f"the traced test run wrote no trace ({exc}); output tail: {out[-300:]!r}") from None
        lines = {t: {f.removeprefix("/testbed/"): ls for f, ls in files.items()} for t, files in trace["lines"].items()}
        passing = sorted(t for t, s in statuses.items() if s in PASSING and not any(c.isspace() for c in t))
        return {"passing": passing, "failing": sorted(t for t, s in statuses.items() if s not in PASSING),
                "lines": lines, "seconds": trace["seconds"], "wall_seconds": round(secs, 2)}


# -- synthesis ---------------------------------------------------------------------------------------


class Synthesizer:
    def __init__(self, recipe: Recipe, out: Path, work: Path, cache: Path, seed: int = 0, max_fail: int = 10,
                 per_function: int = 2, max_test_seconds: float = 20.0, min_timeout_s: float = 30.0,
                 progress: Progress | None = None) -> None:
        self.recipe, self.out, self.work, self.cache = recipe, Path(out), Path(work), Path(cache)
        self.seed, self.max_fail, self.per_function, self.max_test_seconds = seed, max_fail, per_function, max_test_seconds
        self.min_timeout_s = min_timeout_s
        self.say = progress or (lambda line: None)
        self._lock = threading.Lock()

    # 1. the tree

    def tree(self, pkg: PackageRecipe) -> Path:
        dest = self.work / pkg.name / "tree"
        if (dest / ".nano-complete").is_file():
            return dest
        sdist = download(pkg.name, pkg.version, self.cache / "sdists")
        with tempfile.TemporaryDirectory(prefix="nano-sdist-") as tmp:
            top = extract(sdist, Path(tmp) / "x")
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            copy_tree(top, dest, self.recipe.drop_always + pkg.drop)
        (dest / ".nano-complete").write_text("")
        return dest

    # 2. baseline

    def baseline(self, pkg: PackageRecipe, tree: Path, sandbox: PackageSandbox) -> dict:
        path = self.work / pkg.name / "baseline.json"
        if path.is_file():
            return json.loads(path.read_text())
        data = sandbox.baseline(source_files(tree))
        _atomic_write(path, json.dumps(data))
        return data

    # 3. candidates and validation

    def candidates(self, pkg: PackageRecipe, tree: Path, base: dict) -> list[tuple[str, Mutation, list[str]]]:
        """(file, mutation, covering test files) on covered lines, in a seeded order alternating kinds."""
        covered: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
        passing_files = {t.split("::")[0] for t in base["passing"]}
        for test_file, files in base["lines"].items():
            if test_file not in passing_files:
                continue
            for src, lines in files.items():
                for ln in lines:
                    covered[src][ln].add(test_file)
        by_kind: dict[str, list] = defaultdict(list)
        for src in sorted(covered):
            path = tree / src
            if not path.is_file() or is_test_path(src):
                continue
            text = path.read_text(encoding="utf-8")
            for m in candidates(text):  # checked with is_valid when tried (a big module has thousands)
                tests = covered[src].get(m.lineno)
                if not tests:
                    continue
                by_kind[m.kind].append((src, m, sorted(tests)))
        rng = random.Random(f"{self.seed}:{pkg.name}")
        for items in by_kind.values():
            rng.shuffle(items)
        order, kinds = [], [k for k in KINDS if by_kind.get(k)]
        while kinds:
            for k in list(kinds):
                if by_kind[k]:
                    order.append(by_kind[k].pop())
                else:
                    kinds.remove(k)
        return order

    def validate(self, pkg: PackageRecipe, tree: Path, base: dict, sandbox_factory) -> list[dict]:
        results_path = self.work / pkg.name / "results.jsonl"
        done = _read_jsonl(results_path)
        seen = {r["id"] for r in done}
        kept = [r for r in done if r["status"] == "kept"]
        per_func = Counter((r["file"], r["mutation"]["function"]) for r in kept)
        dedupe = {(r["file"], r["mutation"]["function"], tuple(r["FAIL_TO_PASS"])) for r in kept}
        attempts = len(done)
        passing = set(base["passing"])
        dumps: dict[str, str | None] = {}
        sandbox = None
        try:
            for src, m, test_files in self.candidates(pkg, tree, base):
                if len(kept) >= pkg.target or attempts >= pkg.max_attempts:
                    break
                rid = f"{src}:{m.key()}"
                if rid in seen or per_func[(src, m.function)] >= self.per_function:
                    continue
                budget = sum(base["seconds"].get(t, 1.0) for t in test_files)
                if budget > (pkg.max_test_seconds or self.max_test_seconds):
                    continue
                text = (tree / src).read_text(encoding="utf-8")
                if src not in dumps:
                    dumps[src] = dump_ast(text)
                if not is_valid(text, m, dumps[src]):
                    continue
                if sandbox is None:
                    sandbox = sandbox_factory()
                rec = self._validate_one(pkg, sandbox, src, m, test_files, passing, budget)
                rec["id"] = rid
                key = (src, m.function, tuple(rec.get("FAIL_TO_PASS", [])))
                if rec["status"] == "kept" and key in dedupe:
                    rec["status"] = "duplicate"
                attempts += 1
                with open(results_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                    f.flush()
                done.append(rec)
                if rec["status"] == "kept":
                    kept.append(rec)
                    dedupe.add(key)
                    per_func[(src, m.function)] += 1
                self.say(f"{pkg.name}: {m.kind} {m.function} line {m.lineno}: {rec['status']} "
                         f"({rec.get('failing', len(rec.get('FAIL_TO_PASS', [])))} failing, {rec['seconds']:.1f} s) "
                         f"[{len(kept)}/{pkg.target} kept, {attempts} tried]")
        finally:
            if sandbox is not None:
                sandbox.close()
        return done

    def _validate_one(self, pkg: PackageRecipe, sandbox: PackageSandbox, src: str, m: Mutation,
                      test_files: list[str], passing: set[str], budget: float) -> dict:
        from swebench.harness.log_parsers import PARSER_REGISTRY

        target = sandbox.root / src
        original = target.read_bytes()
        started = time.monotonic()
        try:
            target.write_text(m.apply(original.decode("utf-8")), encoding="utf-8")
            limit = max(self.min_timeout_s, 4 * budget + 5)
            out, timed_out, _ = sandbox.pytest(" ".join(test_files), limit)
        finally:
            target.write_bytes(original)
        rec = {"file": src, "mutation": m.as_dict(), "test_files": test_files, "seconds": round(time.monotonic() - started, 2)}
        if timed_out:
            return {**rec, "status": "timeout"}
        statuses = PARSER_REGISTRY["parse_log_pytest"](out, None)
        clean = gradable_tests(passing, test_files)
        f2p = [t for t in clean if statuses.get(t) not in PASSING]
        if not f2p:
            return {**rec, "status": "no_failure"}
        if len(f2p) > self.max_fail:
            return {**rec, "status": "too_many_failures", "failing": len(f2p)}
        sections = failure_sections(out)
        names = {t.split("::")[-1] for t in f2p} | {t.split("::", 1)[-1].replace("::", ".") for t in f2p}
        return {**rec, "status": "kept", "FAIL_TO_PASS": f2p, "PASS_TO_PASS": [t for t in clean if t not in f2p],
                "sections": {k: v[:80] for k, v in sections.items() if k in names}}

    # 4. instances

    def instance(self, pkg: PackageRecipe, tree: Path, rec: dict) -> dict | None:
        """The instance of a kept mutant (None when another file of the tree holds the clean function)."""
        m = Mutation(**rec["mutation"])
        src = rec["file"]
        digest = hashlib.sha256(f"{pkg.repo}\0{pkg.version}\0{rec['id']}".encode()).hexdigest()[:10]
        iid = f"{pkg.key}.synth-{digest}"
        bundle = self.out / "repos" / f"{iid}.bundle"
        cached = self.work / pkg.name / "instances" / f"{iid}.json"
        if cached.is_file() and bundle.is_file():
            return json.loads(cached.read_text())
        original = (tree / src).read_text(encoding="utf-8")
        copy = clean_copy_elsewhere(tree, src, original, m)
        if copy:
            self.say(f"{iid}: skipped: {copy} holds the clean function")
            return None
        with tempfile.TemporaryDirectory(prefix="nano-inst-") as tmp:
            repo = Path(tmp) / "repo"
            repo.mkdir()
            git(repo, "init", "-q", "-b", "main")
            copy_tree(tree, repo, [".nano-complete"])
            (repo / src).write_text(m.apply(original), encoding="utf-8")
            base = commit_all(repo, f"{pkg.name} {pkg.version}\n\nImported from the {pkg.name}=={pkg.version} sdist "
                                    f"on PyPI.", AUTHOR, self.recipe.date, force=True)
            committed = len(git(repo, "ls-files").splitlines())
            shipped = sum(1 for p in tree.rglob("*") if p.is_file() and p.name != ".nano-complete")
            if committed != shipped:
                raise DatasetError(f"{iid}: the base commit holds {committed} files, the tree {shipped}")
            (repo / src).write_text(original, encoding="utf-8")
            gold = git(repo, "diff", "--no-color", "--no-ext-diff", "HEAD", "--", src)
            git(repo, "checkout", "-q", "--", src)
            if not gold.strip():
                raise DatasetError(f"{iid}: empty gold patch")
            bundle.parent.mkdir(parents=True, exist_ok=True)
            tmp_bundle = bundle.with_suffix(".tmp")
            git(repo, "bundle", "create", "-q", str(tmp_bundle), "HEAD", "main")
            tmp_bundle.replace(bundle)
        version = ".".join(pkg.version.split(".")[:2])
        problem = statement(iid, pkg.name, pkg.version, module_name(src), m.function, rec["FAIL_TO_PASS"],
                            rec.get("sections") or {}, tree)
        inst = {
            "repo": pkg.repo, "instance_id": iid, "base_commit": base, "patch": gold, "test_patch": "",
            "problem_statement": problem, "hints_text": "", "created_at": self.recipe.date, "version": version,
            "FAIL_TO_PASS": json.dumps(rec["FAIL_TO_PASS"]), "PASS_TO_PASS": json.dumps(rec["PASS_TO_PASS"]),
            "environment_setup_commit": base,
            "nano": {"package": pkg.name, "package_version": pkg.version, "split": pkg.split, "kind": m.kind,
                     "file": src, "function": m.function, "line": m.lineno},
        }
        cached.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(cached, json.dumps(inst))
        return inst

    # driver

    def run_package(self, pkg: PackageRecipe) -> list[dict]:
        started = time.monotonic()
        tree = self.tree(pkg)
        sandbox_holder: list[PackageSandbox] = []

        def factory() -> PackageSandbox:
            sb = PackageSandbox(tree, pkg.repo, pkg.version)
            sandbox_holder.append(sb)
            return sb

        base_path = self.work / pkg.name / "baseline.json"
        if base_path.is_file():
            base = json.loads(base_path.read_text())
            sb = None
        else:
            sb = factory()
            self.say(f"{pkg.name}: running the clean test suite with line tracing")
            base = self.baseline(pkg, tree, sb)
            self.say(f"{pkg.name}: {len(base['passing'])} tests pass on the clean tree "
                     f"({len(base['failing'])} do not; {base['wall_seconds']} s)")
        try:
            results = self.validate(pkg, tree, base, (lambda: sb) if sb is not None else factory)
        finally:
            for s in sandbox_holder:
                if s is not sb:
                    s.close()
            if sb is not None:
                sb.close()
        kept = [r for r in results if r["status"] == "kept"]
        insts = [i for i in (self.instance(pkg, tree, r) for r in kept) if i is not None]
        _atomic_write(self.work / pkg.name / "timing.json", json.dumps(
            {"seconds_this_run": round(time.monotonic() - started, 1),
             "validation_seconds": round(sum(r["seconds"] for r in results), 1), "validated": len(results),
             "kept": len(kept)}))
        return insts

    def run(self, names: list[str] | None = None, jobs: int = 1) -> dict:
        names = names or list(self.recipe.packages)
        unknown = [n for n in names if n not in self.recipe.packages]
        if unknown:
            raise DatasetError(f"unknown package(s) {', '.join(unknown)}; the recipe has {', '.join(self.recipe.packages)}")
        self.out.mkdir(parents=True, exist_ok=True)
        errors: dict[str, str] = {}
        pending = list(names)

        def worker() -> None:
            while True:
                with self._lock:
                    if not pending:
                        return
                    name = pending.pop(0)
                try:
                    self.run_package(self.recipe.packages[name])
                except (DatasetError, OSError) as exc:
                    errors[name] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    self.say(f"{name}: FAILED: {errors[name]}")
                except Exception as exc:  # noqa: BLE001 -- one package's failure must not stop the others
                    errors[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
                    self.say(f"{name}: FAILED: {errors[name]}")
                self.write_outputs(errors)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return self.write_outputs(errors)

    def write_outputs(self, errors: dict[str, str] | None = None) -> dict:
        """train.jsonl, heldout.jsonl and manifest.json from every package's finished instances."""
        with self._lock:
            rows = {"train": [], "heldout": []}
            manifest = {"recipe": {n: {"repo": p.repo, "version": p.version, "split": p.split}
                                   for n, p in self.recipe.packages.items()},
                        "packages": {}, "errors": errors or {}}
            for name, pkg in self.recipe.packages.items():
                folder = self.work / name / "instances"
                insts = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
                insts = [i for i in insts if (self.out / "repos" / f"{i['instance_id']}.bundle").is_file()]
                results = _read_jsonl(self.work / name / "results.jsonl")
                timing = self.work / name / "timing.json"
                rows[pkg.split] += insts
                manifest["packages"][name] = {
                    "split": pkg.split, "instances": len(insts),
                    "kinds": dict(Counter(i["nano"]["kind"] for i in insts)),
                    "validated": len(results), "outcomes": dict(Counter(r["status"] for r in results)),
                    "validation_seconds": round(sum(r["seconds"] for r in results), 1),
                    **({"timing": json.loads(timing.read_text())} if timing.is_file() else {}),
                }
            for split, items in rows.items():
                items.sort(key=lambda i: i["instance_id"])
                _atomic_write(self.out / f"{split}.jsonl", "".join(json.dumps(i) + "\n" for i in items))
            manifest["counts"] = {s: len(v) for s, v in rows.items()}
            manifest["kinds"] = {s: dict(Counter(i["nano"]["kind"] for i in v)) for s, v in rows.items()}
            validated = sum(p["validated"] for p in manifest["packages"].values())
            secs = sum(p["validation_seconds"] for p in manifest["packages"].values())
            kept = sum(manifest["counts"].values())
            manifest["validation"] = {"validated": validated, "seconds": round(secs, 1),
                                      "seconds_per_validation": round(secs / validated, 2) if validated else None,
                                      "seconds_per_instance": round(secs / kept, 2) if kept else None}
            _atomic_write(self.out / "manifest.json", json.dumps(manifest, indent=2))
            _atomic_write(self.out / "STATUS.md", status_text(manifest))
            return manifest


def clean_copy_elsewhere(tree: Path, src: str, original: str, m: Mutation) -> str | None:
    """A file of ``tree`` other than ``src`` that holds the clean function's source (a ``build/lib`` copy in
    an sdist, say): the agent could read the fix there. None when there is none."""
    body = "".join(original.splitlines(keepends=True)[m.func_lineno - 1:m.func_end_lineno]).strip()
    if len(body.splitlines()) < 2:
        body = original[max(0, m.start - 80):m.end + 80].strip()
    for path in tree.rglob("*"):
        rel = path.relative_to(tree).as_posix()
        if rel == src or not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        try:
            if body in path.read_text(encoding="utf-8", errors="ignore"):
                return rel
        except OSError:
            continue
    return None


def status_text(manifest: dict) -> str:
    """STATUS.md: what is ready, per split and package (rewritten after every package)."""
    lines = [f"# Nano task synthesis: status ({time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())})", "",
             f"Ready: {manifest['counts']['train']} training instances (train.jsonl), "
             f"{manifest['counts']['heldout']} held-out instances (heldout.jsonl); bundles in repos/.", "",
             "| package | split | instances | validated | outcomes | validation s |", "|---|---|---|---|---|---|"]
    for name, p in manifest["packages"].items():
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(p["outcomes"].items()))
        lines.append(f"| {name} | {p['split']} | {p['instances']} | {p['validated']} | {outcomes} | "
                     f"{p['validation_seconds']} |")
    if manifest["errors"]:
        lines += ["", "Errors:"] + [f"- {n}: {e}" for n, e in manifest["errors"].items()]
    v = manifest["validation"]
    lines += ["", f"Validation: {v['validated']} mutants in {v['seconds']} s ({v['seconds_per_validation']} s each, "
              f"{v['seconds_per_instance']} s per kept instance)."]
    return "\n".join(lines) + "\n"


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash: that mutant is validated again
    return out


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # two writers never share one
    tmp.write_text(text)
    tmp.replace(path)


def write_subset(src: Path, dest: Path, count: int = 8, max_bundle_bytes: int = 200_000, seed: int = 0) -> list[dict]:
    """Copy ``count`` held-out instances of ``src`` (a synthesized dataset) with their bundles into ``dest``:
    taken from the held-out packages in turn, only bundles up to ``max_bundle_bytes``, seeded order."""
    src, dest = Path(src), Path(dest)
    rows = [json.loads(line) for line in (src / "heldout.jsonl").read_text().splitlines() if line.strip()]
    by_pkg: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if (src / "repos" / f"{row['instance_id']}.bundle").stat().st_size <= max_bundle_bytes:
            by_pkg[row["nano"]["package"]].append(row)
    rng = random.Random(seed)
    for items in by_pkg.values():
        items.sort(key=lambda r: r["instance_id"])
        rng.shuffle(items)
    chosen, pkgs = [], sorted(by_pkg)
    while len(chosen) < count and any(by_pkg[p] for p in pkgs):
        for p in pkgs:
            if by_pkg[p] and len(chosen) < count:
                chosen.append(by_pkg[p].pop())
    if not chosen:
        raise DatasetError(f"no held-out instance in {src} has a bundle of at most {max_bundle_bytes} bytes")
    (dest / "repos").mkdir(parents=True, exist_ok=True)
    for old in (dest / "repos").glob("*.bundle"):
        old.unlink()
    chosen.sort(key=lambda r: r["instance_id"])
    for row in chosen:
        shutil.copyfile(src / "repos" / f"{row['instance_id']}.bundle", dest / "repos" / f"{row['instance_id']}.bundle")
    _atomic_write(dest / "heldout.jsonl", "".join(json.dumps(r) + "\n" for r in chosen))
    return chosen
