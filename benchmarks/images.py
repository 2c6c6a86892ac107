"""Image builds and copies: Dockerfile images, repository environments, tar copies in and out; writes JSON.

    .venv/bin/python benchmarks/images.py [--out PATH]

- Dockerfile image (FROM an unpullable image, so built on the offline base): first build, reuse, rebuild
  after one context file changed.
- repository environment (a small package depending on ``six``, with pytest): first build with no layer
  cache (a throw-away sandbox uid makes every step after the CA new), reuse, rebuild after a dependency
  changed (the engine's layer cache keeps the venv and pip steps), ``python -m pytest`` in a sandbox from it.
- copy_in and copy_out of a tree (2,000 files, 20 MB) through a DockerSandbox.

Talks to PyPI (through the host's network) during the environment builds only. Every tag it makes is
removed at the end.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from loopcoder.runtime.config import load_runtime_config
from loopcoder.runtime.docker_sandbox import DockerSandbox
from loopcoder.runtime.engine import connect_docker
from loopcoder.runtime.images import build_dockerfile_image
from loopcoder.runtime.repo_env import build_repo_env_image

ROOT = Path(__file__).resolve().parents[1]


def timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return value, round(time.perf_counter() - t0, 2)


def bench_dockerfile(client, cfg, work: Path, tags: list[str]) -> dict:
    ctx = work / "task"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "ARG BASE=registry.invalid/bench/python:3.11-slim\nFROM ${BASE} AS build\nRUN echo built > /built\n"
        "FROM build\nWORKDIR /app\nCOPY . /app\nRUN ls /app > /app/listing\n")
    (ctx / "data.txt").write_text(uuid.uuid4().hex)  # a new tag on every run
    first, first_s = timed(lambda: build_dockerfile_image(client, ctx, cfg))
    tags.append(first.tag)
    again, again_s = timed(lambda: build_dockerfile_image(client, ctx, cfg))
    (ctx / "data.txt").write_text(uuid.uuid4().hex)
    changed, changed_s = timed(lambda: build_dockerfile_image(client, ctx, cfg))
    tags.append(changed.tag)
    assert again.reused and not changed.reused and first.substituted
    tags += list(first.substituted.values())  # the offline base with the CA, under this run's repository
    return {"first_build_s": first_s, "reuse_s": again_s, "context_changed_rebuild_s": changed_s,
            "substituted": first.substituted}


def bench_repo_env(client, cfg, work: Path, tags: list[str]) -> dict:
    repo = work / "repo"
    (repo / "tinypkg").mkdir(parents=True)
    (repo / "tests").mkdir()
    (repo / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "tinypkg"\nversion = "0.1.0"\ndependencies = ["six==1.17.0"]\n'
        '[project.optional-dependencies]\ntest = ["pytest"]\n')
    (repo / "tinypkg" / "__init__.py").write_text("import six\n")
    (repo / "tests" / "test_tiny.py").write_text("import tinypkg\n\ndef test_it():\n    assert tinypkg.six\n")
    cold_cfg = cfg.model_copy(update={"sandbox_uid": random.randint(20000, 60000)})
    first, first_s = timed(lambda: build_repo_env_image(client, repo, cold_cfg))
    tags.append(first.tag)
    again, again_s = timed(lambda: build_repo_env_image(client, repo, cold_cfg))
    pyproject = repo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("six==1.17.0", "six==1.16.0"))
    changed, changed_s = timed(lambda: build_repo_env_image(client, repo, cold_cfg))
    tags.append(changed.tag)
    with DockerSandbox(repo, image=changed.tag, client=client, labels={"loopcoder.purpose": "benchmark"}) as sb:
        res, pytest_s = timed(lambda: sb.exec("python -m pytest -q"))
    assert again.reused and not changed.reused and res.exit_code == 0, res.output
    size = client.api.inspect_image(first.tag)["Size"]
    return {"first_build_no_cache_s": first_s, "reuse_s": again_s, "dependency_changed_rebuild_s": changed_s,
            "pytest_in_sandbox_s": pytest_s, "image_size_mb": round(size / 1e6), "summary": first.spec.summary()}


def bench_copy(client, cfg, work: Path) -> dict:
    src = work / "tree"
    rng = random.Random(0)
    for i in range(2000):
        d = src / f"d{i % 40}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.bin").write_bytes(rng.randbytes(10_000))
    ws = work / "ws"
    ws.mkdir()
    with DockerSandbox(ws, config=cfg.sandbox, client=client, labels={"loopcoder.purpose": "benchmark"}) as sb:
        sent, in_s = timed(lambda: sb.copy_in(src, "/tmp/tree"))
        got, out_s = timed(lambda: sb.copy_out("/tmp/tree", work / "back"))
    assert sent.files == got.files == 2000
    return {"files": 2000, "mb": round(sent.bytes / 1e6, 1), "copy_in_s": in_s, "copy_out_s": out_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/images.json")
    args = ap.parse_args()
    cfg = load_runtime_config()
    images = cfg.images.model_copy(update={"build_repository": "loopcoder/build-bench",
                                           "env_repository": "loopcoder/env-bench"})
    client = connect_docker()
    result: dict = {
        "benchmark": "images",
        "command": " ".join([".venv/bin/python", "benchmarks/images.py", *map(shlex.quote, sys.argv[1:])]),
        "when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "docker_engine": client.version().get("Version"),
                    "loadavg_1_5_15_before": [round(x, 2) for x in os.getloadavg()],
                    "note": "2 cores shared with other engineers' jobs; PyPI over the host's network"},
    }
    tags: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="loopcoder-bench-"))
    try:
        print("Dockerfile image ...", file=sys.stderr)
        result["dockerfile_image"] = bench_dockerfile(client, images, work, tags)
        print("repository environment ...", file=sys.stderr)
        result["repo_env"] = bench_repo_env(client, images, work, tags)
        print("copies ...", file=sys.stderr)
        result["copy"] = bench_copy(client, cfg, work)
    finally:
        for tag in tags:
            try:
                client.api.remove_image(tag, force=True)
            except Exception:
                pass
        shutil.rmtree(work, ignore_errors=True)
    result["machine"]["loadavg_1_5_15_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("dockerfile_image", "repo_env", "copy")}, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
