"""SWE-bench datasets: loading (local files, or Hub names when online), validation, the bundled mini set.

An instance is a plain dict in the official field format (as `swebench` reads it). Classic instances
(SWE-bench, Lite, Verified) carry the 12 classic fields; new-style instances also carry ``image``,
``eval_script``, ``log_parser`` and ``eval_type``. Repositories come from a folder of bare repositories
or git bundles named ``OWNER__NAME`` (``.bundle``, ``.git`` or no suffix); the mini set ships its own.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from loopcoder.scenarios.swebench.errors import DatasetError

DATA_DIR = Path(__file__).resolve().parent / "data"
MINI_DATASET = DATA_DIR / "mini.jsonl"
MINI_REPOS = DATA_DIR / "repos"
MINI_NAMES = {"mini", "loopcoder-mini"}

CLASSIC_FIELDS = (
    "repo", "instance_id", "base_commit", "patch", "test_patch", "problem_statement", "hints_text",
    "created_at", "version", "FAIL_TO_PASS", "PASS_TO_PASS", "environment_setup_commit",
)
NEW_STYLE_FIELDS = ("image", "eval_script", "log_parser", "eval_type")
_SHA = re.compile(r"[0-9a-f]{40}")
_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


def load_dataset(name: str | Path, split: str = "test", instance_ids: list[str] | None = None) -> list[dict]:
    """Instances of a dataset: ``mini`` (bundled), a local .json/.jsonl/.parquet file, or a Hub name.

    Local files are read offline through ``swebench.harness.utils.load_swebench_dataset``. A Hub name
    needs the network; offline it fails with one line saying so. DatasetError on any problem.
    """
    text = str(name)
    path = MINI_DATASET if text in MINI_NAMES else Path(text)
    if path.suffix in (".json", ".jsonl", ".parquet"):
        if not path.is_file():
            raise DatasetError(f"dataset file not found: {path}")
        source = str(path)
    elif path.is_file():
        raise DatasetError(f"{path}: a dataset file must end in .json, .jsonl or .parquet")
    elif path.is_dir():  # a downloaded Hub dataset (<dir>/<split>.parquet or save_to_disk), read by swebench
        source = text
    else:
        source = text
        if not _hub_reachable():
            raise DatasetError(f"dataset {text!r} is not a local file and the Hugging Face Hub ({HUB[0]}) is not "
                               f"reachable from here; download it where it is and pass the .jsonl/.parquet file")
    import logging

    from swebench.harness.utils import load_swebench_dataset

    logging.disable(logging.WARNING)  # the Hub client logs each failed retry; one line below says it all
    try:
        rows = load_swebench_dataset(source, split, instance_ids or None)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except ValueError as exc:  # unknown instance ids
        raise DatasetError(" ".join(str(exc).split())) from None
    except Exception as exc:  # noqa: BLE001 -- the Hub client raises many types; all mean "not reachable"
        if source != text or path.exists():
            raise DatasetError(f"cannot read dataset {source}: {exc}".splitlines()[0]) from None
        raise DatasetError(
            f"dataset {text!r} is not a local file and the Hugging Face Hub is not reachable from here "
            f"({type(exc).__name__}); download it where the Hub is reachable and pass the .jsonl/.parquet file"
        ) from None
    finally:
        logging.disable(logging.NOTSET)
    instances = [dict(row) for row in rows]
    for inst in instances:
        validate_instance(inst)
    return instances


HUB = ("huggingface.co", 443)


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket

    try:
        with socket.create_connection(HUB, timeout=timeout):
            return True
    except OSError:
        return False


def validate_instance(inst: dict) -> None:
    """DatasetError naming the instance and the field when ``inst`` is not a usable instance."""
    iid = inst.get("instance_id") or "<no instance_id>"
    missing = [f for f in ("repo", "instance_id", "base_commit", "patch")
               if not isinstance(inst.get(f), str) or not inst[f]]
    # An empty test patch is allowed (SWE-smith-style synthesized instances: the tests are already in
    # the tree); its test files are then those FAIL_TO_PASS and PASS_TO_PASS name.
    if not isinstance(inst.get("test_patch"), str):
        missing.append("test_patch")
    missing += [f for f in ("FAIL_TO_PASS", "PASS_TO_PASS") if not isinstance(inst.get(f), (str, list))]
    if missing:
        raise DatasetError(f"instance {iid}: missing or empty field(s) {', '.join(missing)}")
    if inst["instance_id"] in (".", "..") or any(c in inst["instance_id"] for c in "/\\\0"):
        # it names the instance's official log folder (logs/run_evaluation/<run>/<model>/<instance_id>/)
        raise DatasetError(f"instance {iid!r}: instance_id must be a file name (no '/', '\\' or NUL, not '.' "
                           f"or '..')")
    if not _REPO.fullmatch(inst["repo"]):
        raise DatasetError(f"instance {iid}: repo {inst['repo']!r} is not OWNER/NAME")
    if not _SHA.fullmatch(inst["base_commit"]):
        raise DatasetError(f"instance {iid}: base_commit {inst['base_commit']!r} is not a 40-hex commit id")
    for field in ("FAIL_TO_PASS", "PASS_TO_PASS"):
        tests = tests_of(inst, field)
        if field == "FAIL_TO_PASS" and not tests:
            raise DatasetError(f"instance {iid}: FAIL_TO_PASS is empty")
    present = [f for f in NEW_STYLE_FIELDS if inst.get(f)]
    if present and len(present) != len(NEW_STYLE_FIELDS) and "eval_script" in present:
        raise DatasetError(f"instance {iid}: eval_script without {', '.join(sorted(set(NEW_STYLE_FIELDS) - set(present)))}")


def tests_of(inst: dict, field: str) -> list[str]:
    """FAIL_TO_PASS / PASS_TO_PASS as a list (datasets store them as JSON strings or lists)."""
    value = inst.get(field)
    if isinstance(value, list):
        tests = value
    else:
        try:
            tests = json.loads(value or "[]")
        except json.JSONDecodeError:
            raise DatasetError(f"instance {inst.get('instance_id')}: {field} is not a JSON list") from None
    if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
        raise DatasetError(f"instance {inst.get('instance_id')}: {field} must be a list of test ids")
    return tests


def is_new_style(inst: dict) -> bool:
    """True when the instance carries its own eval script (and so its image, parser and eval type)."""
    return bool(inst.get("eval_script"))


def repo_key(repo: str) -> str:
    """``owner/name`` -> ``owner__name``, the file name of its bare repository or bundle."""
    return repo.replace("/", "__")


def find_repo_source(inst: dict, repos_dir: str | Path | None = None) -> Path:
    """The bundle or bare repository holding ``inst``'s base commit in ``repos_dir`` (default: bundled).

    Looked up in order: ``<instance_id>.bundle`` (per-instance bundles, for repositories whose
    instances have different base commits), then ``OWNER__NAME.bundle``, ``OWNER__NAME.git``,
    ``OWNER__NAME``. DatasetError when none exists.
    """
    root = Path(repos_dir) if repos_dir else MINI_REPOS
    key = repo_key(inst["repo"])
    for name in (f"{inst['instance_id']}.bundle", f"{key}.bundle", f"{key}.git", key):
        candidate = root / name
        if candidate.exists():
            return candidate
    raise DatasetError(f"no repository for {inst['repo']} in {root} (looked for {key}.bundle, {key}.git, {key}); "
                       f"pass --repos-dir with bare repositories or git bundles named OWNER__NAME")


def summarize(instances: list[dict]) -> list[dict]:
    """One row per instance for listings: id, repo, version, style, F2P and P2P counts, patch sizes."""
    rows = []
    for inst in instances:
        rows.append({
            "instance_id": inst["instance_id"],
            "repo": inst["repo"],
            "version": str(inst.get("version", "")),
            "style": "new" if is_new_style(inst) else "classic",
            "fail_to_pass": len(tests_of(inst, "FAIL_TO_PASS")),
            "pass_to_pass": len(tests_of(inst, "PASS_TO_PASS")),
            "patch_lines": inst["patch"].count("\n"),
            "test_patch_lines": inst["test_patch"].count("\n"),
        })
    return rows
