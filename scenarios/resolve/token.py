"""Which token to use for a GitHub host, from the environment or gh's config file; never printed.

github.com: ``GH_TOKEN``, then ``GITHUB_TOKEN``. Any other host (GitHub Enterprise): ``GH_ENTERPRISE_TOKEN``,
then ``GITHUB_ENTERPRISE_TOKEN``; ``GH_TOKEN``/``GITHUB_TOKEN`` only when ``GITHUB_SERVER_URL`` names that
host (as GitHub Actions sets it on Enterprise), so a github.com token is never sent to a host that a pasted
URL happens to name. Then gh's ``hosts.yml`` (``$GH_CONFIG_DIR``, ``$XDG_CONFIG_HOME/gh``, ``~/.config/gh``)
when it holds a token for the host: the file is read, gh is never run. Newer gh keeps tokens in the system
keyring, out of reach here; the hint then says to export ``GITHUB_TOKEN=$(gh auth token)``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from loopcoder.scenarios.resolve.urls import host_of


@dataclass(frozen=True)
class Token:
    """A token and where it came from; ``repr`` and ``str`` never show the value."""

    value: str = field(repr=False)
    source: str  # "GITHUB_TOKEN", "gh config /home/u/.config/gh/hosts.yml", ...

    def __str__(self) -> str:
        return f"token from {self.source}"


def gh_hosts_file(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("GH_CONFIG_DIR"):
        return Path(env["GH_CONFIG_DIR"]) / "hosts.yml"
    if env.get("XDG_CONFIG_HOME"):
        return Path(env["XDG_CONFIG_HOME"]) / "gh" / "hosts.yml"
    return Path(env.get("HOME") or Path.home()) / ".config" / "gh" / "hosts.yml"


def _from_gh_config(host: str, path: Path) -> str | None:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    entry = data.get(host) if isinstance(data, dict) else None
    if not isinstance(entry, dict):
        return None
    token = entry.get("oauth_token")
    users = entry.get("users")
    if not token and isinstance(users, dict) and isinstance(users.get(entry.get("user")), dict):
        token = users[entry.get("user")].get("oauth_token")  # gh >= 2.40 with insecure storage
    return token.strip() if isinstance(token, str) and token.strip() else None


def find_token(host: str, environ: dict[str, str] | None = None) -> Token | None:
    """The token for ``host`` (lower-case, with :port when not the default), or None."""
    env = os.environ if environ is None else environ
    names = ["GH_TOKEN", "GITHUB_TOKEN"] if host in ("github.com", "api.github.com") else []
    if not names:
        names = ["GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN"]
        server = env.get("GITHUB_SERVER_URL", "")
        if server and host_of(server) == host:
            names += ["GH_TOKEN", "GITHUB_TOKEN"]
    for name in names:
        value = (env.get(name) or "").strip()
        if value:
            return Token(value, name)
    path = gh_hosts_file(env)
    value = _from_gh_config("github.com" if host == "api.github.com" else host, path)
    return Token(value, f"gh config {path}") if value else None


def token_hint(host: str) -> str:
    """How to provide a token for ``host`` (for messages)."""
    if host == "github.com":
        return "set GITHUB_TOKEN (with gh installed: export GITHUB_TOKEN=$(gh auth token))"
    return (f"set GITHUB_ENTERPRISE_TOKEN for {host} (with gh: export GITHUB_ENTERPRISE_TOKEN="
            f"$(gh auth token --hostname {host}))")
