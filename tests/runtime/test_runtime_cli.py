"""`loopcoder sandbox ...` and `loopcoder doctor` through the real CLI entry point."""
from __future__ import annotations

import pytest

from loopcoder.scenarios.cli import main


def run_cli(args, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_unreachable_engine_is_one_line_with_the_fix(monkeypatch, capsys):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    code, _, err = run_cli(["sandbox", "gc"], capsys)
    assert code == 2
    assert err.startswith("error: Docker engine not reachable") and "dockerd" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bad_env_spec_key_is_one_line(tmp_path, capsys):
    spec = tmp_path / "env.yaml"
    spec.write_text("pip_pakages: [pytest]\n")
    code, _, err = run_cli(["sandbox", "build-env", str(spec)], capsys)
    assert code == 2 and "pip_pakages: unknown key" in err and err.count("\n") == 1


@pytest.mark.docker
def test_doctor_reports_every_check(docker_client, base_image, capsys):
    code, out, _ = run_cli(["doctor"], capsys)
    for name in ("docker engine", "base image", "sandbox", "sandbox disk", "torch", "gpu", "grammars"):
        assert name in out
    assert code == 0, out  # no failures here; the missing GPU is a warning


@pytest.mark.docker
def test_gc_dry_run_lists_without_removing(docker_client, base_image, capsys):
    code, out, _ = run_cli(["sandbox", "gc", "--dry-run"], capsys)
    assert code == 0 and ("no leftover sandbox containers" in out or "would remove" in out)
