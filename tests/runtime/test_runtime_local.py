"""LocalSandbox: explicit opt-in, same session semantics, timeouts, output caps, no symlink escapes."""
from __future__ import annotations

import os

import pytest

from loopcoder.runtime import open_sandbox
from loopcoder.runtime.config import RuntimeConfig, SandboxConfig
from loopcoder.runtime.errors import SandboxError
from loopcoder.runtime.local_sandbox import LocalSandbox
from loopcoder.runtime.sandbox import Sandbox

pytestmark = pytest.mark.filterwarnings("ignore:LocalSandbox runs agent commands")


@pytest.fixture
def local(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    cfg = RuntimeConfig(sandbox=SandboxConfig(output_limit_bytes=10_000, default_timeout_s=30))
    with LocalSandbox(ws, config=cfg, allow=True) as sb:
        yield sb


def test_local_sandbox_needs_explicit_opt_in(tmp_path, monkeypatch):
    monkeypatch.delenv("LOOPCODER_ALLOW_LOCAL_SANDBOX", raising=False)
    with pytest.raises(SandboxError, match="opt in"):
        LocalSandbox(tmp_path)


def test_local_sandbox_warns_loudly(tmp_path, capsys):
    with pytest.warns(UserWarning, match="directly on this machine"):
        LocalSandbox(tmp_path, allow=True).close()
    assert "WARNING: LocalSandbox" in capsys.readouterr().err


def test_open_sandbox_local_backend_satisfies_the_protocol(tmp_path):
    cfg = RuntimeConfig.model_validate({"sandbox": {"backend": "local"}, "local": {"allow": True}})
    with open_sandbox(tmp_path, cfg) as sb:
        assert isinstance(sb, Sandbox)
        assert sb.exec("echo ok").output == "ok\n"


def test_session_keeps_cwd_exports_and_functions(local):
    assert local.exec("mkdir -p sub && cd sub && export FOO=bar && greet() { echo hi $1; }").exit_code == 0
    res = local.exec("pwd; echo $FOO; greet you")
    assert res.output == f"{local.workspace}/sub\nbar\nhi you\n"
    local.exec("unset FOO")
    assert local.exec("echo [${FOO-unset}]").output == "[unset]\n"


def test_workdir_and_env_apply_to_one_command(local):
    (local.workspace / "d").mkdir()
    res = local.exec("pwd; echo $ONE", workdir="/testbed/d", env={"ONE": "1"})
    assert res.output == f"{local.workspace}/d\n1\n"
    assert local.exec("pwd; echo [$ONE]").output == f"{local.workspace}\n[]\n"


def test_exit_code_and_stderr_are_reported(local):
    res = local.exec("echo out; echo err >&2; exit 3")
    assert (res.exit_code, res.output, res.timed_out) == (3, "out\nerr\n", False)


def test_timeout_kills_the_process_tree_and_session_survives(local):
    res = local.exec("(sleep 971 &); sleep 972 & while :; do :; done", timeout=1)
    assert res.timed_out and res.exit_code == 124
    ps = os.popen("ps -eo args").read()
    assert "sleep 971" not in ps and "sleep 972" not in ps
    assert local.exec("echo next").output == "next\n"


def test_background_processes_die_with_their_command(local):
    assert local.exec("sleep 973 & echo started").output == "started\n"
    assert "sleep 973" not in os.popen("ps -eo args").read()


def test_output_is_capped_head_and_tail(local):
    res = local.exec("echo FIRST; head -c 3000000 /dev/zero | tr '\\0' x; echo; echo LAST")
    assert res.output.startswith("FIRST\n") and res.output.endswith("LAST\n")
    assert res.truncated_bytes == 6 + 3_000_001 + 5 - 10_000
    assert len(res.output.encode()) < 10_200


def test_files_inside_workspace_roundtrip(local):
    local.write_file("/testbed/a/b.bin", b"\x00\x01", mode=0o600)
    assert local.read_file("a/b.bin") == b"\x00\x01"
    assert oct((local.workspace / "a/b.bin").stat().st_mode & 0o777) == "0o600"


def test_symlink_leaving_the_workspace_is_never_followed(local, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    os.symlink(secret, local.workspace / "link")
    os.symlink(tmp_path, local.workspace / "dirlink")
    with pytest.raises(SandboxError, match="symlink"):
        local.read_file("link")
    with pytest.raises(SandboxError):
        local.write_file("link", "overwritten")
    with pytest.raises(SandboxError, match="outside the workspace"):
        local.read_file("dirlink/secret.txt")
    with pytest.raises(SandboxError, match="outside the workspace"):
        local.write_file("dirlink/new.txt", "x")
    with pytest.raises(SandboxError, match="inside the workspace"):
        local.read_file(str(secret))
    assert secret.read_text() == "TOPSECRET" and not (tmp_path / "new.txt").exists()
