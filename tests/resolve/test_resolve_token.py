"""Where the token comes from, and that a github.com token is never handed to another host."""
from loopcoder.scenarios.resolve.token import Token, find_token, gh_hosts_file


def test_github_com_reads_gh_token_then_github_token():
    assert find_token("github.com", {"GITHUB_TOKEN": "b", "GH_TOKEN": "a"}) == Token("a", "GH_TOKEN")
    assert find_token("github.com", {"GITHUB_TOKEN": "b"}) == Token("b", "GITHUB_TOKEN")
    assert find_token("api.github.com", {"GITHUB_TOKEN": "b"}).source == "GITHUB_TOKEN"
    assert find_token("github.com", {"GITHUB_TOKEN": "  ", "HOME": "/nonexistent"}) is None


def test_a_github_com_token_is_not_sent_to_another_host():
    env = {"GITHUB_TOKEN": "ghp_for_github_com", "HOME": "/nonexistent"}
    assert find_token("ghe.corp.example", env) is None
    assert find_token("evil.example", env) is None
    assert find_token("ghe.corp.example", {**env, "GITHUB_ENTERPRISE_TOKEN": "e"}) == Token("e", "GITHUB_ENTERPRISE_TOKEN")
    assert find_token("ghe.corp.example", {**env, "GH_ENTERPRISE_TOKEN": "f", "GITHUB_ENTERPRISE_TOKEN": "e"}).value == "f"
    # GitHub Actions on an Enterprise server sets GITHUB_SERVER_URL: there GITHUB_TOKEN is that host's token
    actions = {**env, "GITHUB_SERVER_URL": "https://ghe.corp.example"}
    assert find_token("ghe.corp.example", actions) == Token("ghp_for_github_com", "GITHUB_TOKEN")
    assert find_token("other.example", actions) is None


def test_gh_hosts_file_old_and_new_layouts(tmp_path):
    (tmp_path / "hosts.yml").write_text(
        "github.com:\n    oauth_token: gho_old\n    user: octo\n"
        "ghe.corp.example:\n    user: you\n    users:\n        you:\n            oauth_token: gho_new\n"
        "keyring.example:\n    user: k\n    git_protocol: https\n")
    env = {"GH_CONFIG_DIR": str(tmp_path)}
    assert gh_hosts_file(env) == tmp_path / "hosts.yml"
    old = find_token("github.com", env)
    assert old.value == "gho_old" and old.source == f"gh config {tmp_path / 'hosts.yml'}"
    assert find_token("ghe.corp.example", env).value == "gho_new"
    assert find_token("keyring.example", env) is None  # gh keeps that one in the system keyring
    assert find_token("github.com", {**env, "GITHUB_TOKEN": "env"}).value == "env"  # the environment first


def test_gh_config_locations_and_a_broken_file(tmp_path):
    assert gh_hosts_file({"XDG_CONFIG_HOME": "/x"}).as_posix() == "/x/gh/hosts.yml"
    assert gh_hosts_file({"HOME": "/h"}).as_posix() == "/h/.config/gh/hosts.yml"
    (tmp_path / "hosts.yml").write_text("github.com: [unclosed\n")
    assert find_token("github.com", {"GH_CONFIG_DIR": str(tmp_path)}) is None


def test_the_value_is_never_in_repr_or_str():
    t = Token("ghp_secret_value", "GITHUB_TOKEN")
    assert "ghp_secret_value" not in repr(t) and "ghp_secret_value" not in str(t) and str(t) == "token from GITHUB_TOKEN"
