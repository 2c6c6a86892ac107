"""Errors of `loopcoder resolve` (one line each; the CLI prints them without a traceback, exit 2).

No message ever holds a token: messages are built from URLs without credentials and from GitHub's own
error text, which does not echo the token.
"""
from loopcoder.runtime.errors import RuntimeFailure


class ResolveError(RuntimeFailure):
    """Base of every resolve error."""


class IssueUrlError(ResolveError):
    """The argument is not an issue URL (a pull request, another page, another scheme, ...)."""


class GitHubError(ResolveError):
    """The GitHub API answered with an error or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFoundError(GitHubError):
    """404: the repository or issue does not exist, or the token cannot see it."""


class AuthError(GitHubError):
    """401: no token where one is needed, or GitHub rejected it."""


class RateLimitError(GitHubError):
    """The rate limit is exhausted and resets later than we are willing to wait."""


class PullRequestError(ResolveError):
    """--open-pr could not commit, push or open the pull request (the patch is saved regardless)."""
