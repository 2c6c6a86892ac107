"""`loopcoder sandbox build` and `loopcoder sandbox env` through the real CLI entry point."""
from __future__ import annotations

import json

import pytest

from loopcoder.scenarios.cli import main


def run_cli(args, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_env_detect_only_prints_the_summary_and_notes(tmp_path, capsys):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\ndependencies = ["six"]\n'
                                             '[project.optional-dependencies]\ntest = ["pytest>=8"]\n')
    (tmp_path / "requirements-dev.txt").write_text("-r ../../etc/passwd\nmock\n")
    code, out, err = run_cli(["sandbox", "env", str(tmp_path), "--detect-only"], capsys)
    assert code == 0
    assert out.splitlines() == [
        "detected: pyproject (setuptools), extras [test], requirements-dev.txt; python 3.11",
        "installs: six mock pytest>=8",
    ]
    assert "outside the repository, not read" in err
    code, out, _ = run_cli(["sandbox", "env", str(tmp_path), "--detect-only", "--json"], capsys)
    assert code == 0 and json.loads(out)["spec"]["requirements"] == ["six", "mock", "pytest>=8"]


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    code, _, err = run_cli(["sandbox", "env", str(tmp_path / "missing"), "--detect-only"], capsys)
    assert code == 2 and err.startswith("error: repository folder") and err.count("\n") == 1
    code, _, err = run_cli(["sandbox", "build", str(tmp_path), "--build-arg", "NOEQUALS"], capsys)
    assert code == 2 and err == "error: --build-arg 'NOEQUALS' is not KEY=VALUE\n"


@pytest.mark.docker
def test_build_prints_the_tag_then_reuses_it(docker_client, base_image, tmp_path, capsys):
    (tmp_path / "Dockerfile").write_text(f"FROM {base_image}\nARG GREETING\nRUN echo $GREETING > /greeting\n")
    args = ["sandbox", "build", str(tmp_path), "--build-arg", "GREETING=hi", "--set",
            "images.build_repository=loopcoder/build-test"]
    code, out, _ = run_cli(args, capsys)
    tag = out.split()[0]
    try:
        assert code == 0 and tag.startswith("loopcoder/build-test:") and "built in" in out
        code, out, _ = run_cli(args, capsys)
        assert code == 0 and out == f"{tag} (reused)\n"
    finally:
        docker_client.api.remove_image(tag, force=True)
