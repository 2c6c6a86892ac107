"""Runtime pieces that need neither Docker nor git: output capping, protocol, config, Dockerfiles."""
from __future__ import annotations

import math
import struct

import pytest

from loopcoder.configs import ConfigError
from loopcoder.runtime.config import ImagesConfig, RuntimeConfig, host_debian_mirror, load_runtime_config
from loopcoder.runtime.docker_sandbox import _FrameReader
from loopcoder.runtime.errors import SandboxError
from loopcoder.runtime.images import EnvImageSpec, base_dockerfile, debootstrap_command, env_dockerfile
from loopcoder.runtime.output import HeadTailBuffer
from loopcoder.runtime.session import EndMarkerReader, check_timeout, render_request, state_file_saved


def test_head_tail_buffer_keeps_both_ends_and_counts_the_cut():
    buf = HeadTailBuffer(100)
    data = b"".join(b"%06d\n" % i for i in range(10_000))  # 70,000 bytes
    for i in range(0, len(data), 333):
        buf.feed(data[i:i + 333])
    text = buf.render()
    assert text.startswith("000000\n")
    assert text.endswith("009999\n")
    assert buf.truncated_bytes == len(data) - 100
    assert f"[... {len(data) - 100} bytes of output cut; {len(data)} bytes in all ...]" in text
    assert len(buf._head) + len(buf._tail) == 100  # memory stays at the limit


def test_head_tail_buffer_under_limit_is_verbatim():
    buf = HeadTailBuffer(1000)
    buf.feed(b"hello ")
    buf.feed("wörld\n".encode())
    assert buf.render() == "hello wörld\n" and buf.truncated_bytes == 0


def test_end_marker_found_across_chunk_boundaries():
    cap = HeadTailBuffer(1000)
    reader = EndMarkerReader("abc123", cap)
    stream = b"out line\npartial" + b"__LOOPCODER_END_abc123 7 1 s\n" + b"late background noise"
    for i in range(len(stream)):  # byte by byte: worst case for boundary handling
        reader.feed(stream[i:i + 1])
    assert reader.done and reader.exit_code == 7 and reader.oom_kills == 1 and reader.flags == "s"
    assert cap.render() == "out line\npartial"


def test_end_marker_of_another_command_is_output():
    cap = HeadTailBuffer(1000)
    reader = EndMarkerReader("new", cap)
    reader.feed(b"__LOOPCODER_END_old 0 0 -\nx__LOOPCODER_END_new 0 0 -\n")
    assert reader.exit_code == 0 and reader.flags == "" and cap.render() == "__LOOPCODER_END_old 0 0 -\nx"


def test_malformed_end_lines_are_a_sandbox_error_not_a_value_error():
    for trailer in (b"abc 0 -", b"7 1", b"7 1 x", b"7 1 - ", b"-1 0 -", b"7 1 - extra", b"1234 0 -", b"", b"7 1 s\r"):
        reader = EndMarkerReader("s3cr3t", HeadTailBuffer(100))
        with pytest.raises(SandboxError, match="malformed end line"):
            reader.feed(b"out__LOOPCODER_END_s3cr3t " + trailer + b"\n")
    reader = EndMarkerReader("s3cr3t", HeadTailBuffer(100))
    with pytest.raises(SandboxError, match="too long"):
        reader.feed(b"__LOOPCODER_END_s3cr3t " + b"1" * 40)


def test_check_timeout_accepts_finite_positive_numbers_only():
    assert check_timeout(0.001) == 0.001 and check_timeout(5) == 5.0 and check_timeout(1e300) == 1e300
    for bad in (0, -1, -0.0, math.nan, math.inf, -math.inf, "1", "abc", None, True, [1]):
        with pytest.raises(SandboxError, match="timeout must be"):
            check_timeout(bad)


def test_state_file_counts_only_with_the_sentinel_of_its_command(tmp_path):
    f = tmp_path / "state"
    f.write_text("{\n__lc_ok=1\n}\n#__lc_end abc\n")
    assert state_file_saved(f, "abc") and not state_file_saved(f, "abd")
    f.write_text("{\n__lc_ok=1\n}\n#__lc_end abc")  # cut before its last newline
    assert not state_file_saved(f, "abc")
    f.write_text("{\n__lc_keep=(\nPATH\n")
    assert not state_file_saved(f, "abc") and not state_file_saved(tmp_path / "missing", "abc")


def test_frame_reader_demultiplexes_partial_frames():
    frames = b"".join(struct.pack(">BxxxI", 1, len(p)) + p for p in (b"hello ", b"world", b"!"))
    fr, out = _FrameReader(), b""
    for i in range(0, len(frames), 3):
        fr.feed(frames[i:i + 3])
        out += fr.pop()
    assert out == b"hello world!"


def test_render_request_quotes_everything_and_rejects_bad_names():
    req = render_request("echo 'a b' \"$X\"", "/tmp/it's", {"X": "v w'"}, "/testbed")
    assert "__lc_cmd='echo '\"'\"'a b'\"'\"' \"$X\"'" in req
    assert "__lc_workdir='/tmp/it'\"'\"'s'" in req
    with pytest.raises(SandboxError, match="bad environment variable name"):
        render_request("true", None, {"A-B": "1"}, "/testbed")
    with pytest.raises(SandboxError, match="NUL"):
        render_request("echo \x00", None, None, "/testbed")


def test_shipped_runtime_config_is_valid_and_strict():
    cfg = load_runtime_config()
    assert cfg == RuntimeConfig()  # the YAML states the defaults of the model
    assert cfg.sandbox.network == "none" and cfg.sandbox.user != "0:0"
    with pytest.raises(ConfigError, match="sandbox.memroy: unknown key"):
        load_runtime_config(overrides=["sandbox.memroy=1g"])
    with pytest.raises(ConfigError, match="sandbox.user"):
        load_runtime_config(overrides=["sandbox.user=0:0"])


def test_host_debian_mirror_reads_deb822_and_one_line_sources(tmp_path):
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n"
    )
    assert host_debian_mirror((d,), tmp_path / "none") == "http://mirror.example/debian"
    one = tmp_path / "sources.list"
    one.write_text("deb [arch=amd64] http://other.example/debian bookworm main\n")
    assert host_debian_mirror((tmp_path / "missing",), one) == "http://other.example/debian"
    assert host_debian_mirror((tmp_path / "missing",), tmp_path / "none") == "http://deb.debian.org/debian"


def test_debootstrap_command_is_minbase_with_the_required_tools(tmp_path):
    cmd = debootstrap_command(ImagesConfig(mirror="http://m/debian"), tmp_path / "r")
    assert cmd[:2] == ["debootstrap", "--variant=minbase"]
    assert cmd[2] == "--include=python3,git,bash,coreutils,patch,procps"
    assert cmd[3:] == ["bookworm", str(tmp_path / "r"), "http://m/debian"]


def test_base_dockerfile_uses_from_and_creates_the_sandbox_user():
    text = base_dockerfile(ImagesConfig(from_image="debian:bookworm-slim"))
    assert text.startswith("FROM debian:bookworm-slim\n")
    assert "apt-get install -y --no-install-recommends python3 git bash coreutils patch procps" in text
    assert "useradd --uid 1000" in text


def test_env_dockerfile_installs_packages_and_carries_the_ca_bundle():
    spec = EnvImageSpec(apt_packages=["make"], pip_packages=["pytest==8.3.5"], setup=["echo hi > /x"], env={"A": "b"})
    text = env_dockerfile(spec, "sha256:abc", with_ca=True)
    assert text.startswith("FROM sha256:abc\n")
    assert "COPY ca-certificates.crt /usr/local/share/loopcoder/host-ca-bundle.crt" in text
    assert "PIP_CERT=/usr/local/share/loopcoder/host-ca-bundle.crt" in text
    assert "install -y --no-install-recommends make python3-pip" in text
    assert "pip install --no-cache-dir --disable-pip-version-check pytest==8.3.5" in text
    assert 'RUN echo hi > /x\nENV A="b"\n' in text
