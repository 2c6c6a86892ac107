"""Credentials for host git without putting the token in a URL, a command line or any git config.

``git_credentials(token, url)`` makes a tiny ``GIT_ASKPASS`` helper (a fixed shell script in a private
temporary folder; it holds no secret) and returns the environment for ``hostgit.run_git(..., env=...)``:
the helper answers git's prompts from variables of that environment, and only for prompts that name the
expected ``scheme://host``, so a redirect to another host gets nothing. git asks only when the server
challenges (401), as GitHub does for pushes and private repositories; public clones send no credentials.
Process listings show ``git`` and the helper's path, never the token; environments of processes are readable
only by their owner (and root).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator, Optional
from urllib.parse import urlsplit

from loopcoder.scenarios.resolve.token import Token
from loopcoder.scenarios.resolve.urls import host_of

USERNAME = "x-access-token"  # what GitHub expects with an installation token; personal tokens accept any name

_HELPER = """#!/bin/sh
# git asks "Username for 'SCHEME://HOST': " and "Password for 'SCHEME://USER@HOST': "
case "$1" in
  "Username for '$LOOPCODER_GIT_ORIGIN'"*) printf '%s\\n' "$LOOPCODER_GIT_USERNAME" ;;
  "Password for '$LOOPCODER_GIT_USER_ORIGIN'"*) printf '%s\\n' "$LOOPCODER_GIT_PASSWORD" ;;
  *) exit 1 ;;
esac
"""


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, as git writes it in its credential prompts."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


@contextmanager
def git_credentials(token: Optional[Token], url: str,
                    allowed_hosts: Optional[set[str]] = None) -> Iterator[dict[str, str]]:
    """Environment that lets host git authenticate to ``url``'s host with ``token`` (empty without a token, or
    when ``allowed_hosts`` is given and ``url``'s host is not among them)."""
    if allowed_hosts is not None and host_of(url) not in allowed_hosts:
        token = None
    if token is None:
        yield {}
        return
    folder = tempfile.mkdtemp(prefix="loopcoder-askpass-")  # mode 0700: ours alone
    try:
        helper = os.path.join(folder, "askpass")
        with open(helper, "w") as f:
            f.write(_HELPER)
        os.chmod(helper, 0o700)
        origin = origin_of(url)
        scheme, rest = origin.split("://", 1)
        yield {"GIT_ASKPASS": helper, "LOOPCODER_GIT_ORIGIN": origin,
               "LOOPCODER_GIT_USER_ORIGIN": f"{scheme}://{USERNAME}@{rest}",
               "LOOPCODER_GIT_USERNAME": USERNAME, "LOOPCODER_GIT_PASSWORD": token.value}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
