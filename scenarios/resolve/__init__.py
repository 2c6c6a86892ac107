"""`loopcoder resolve URL`: a GitHub issue in, a patch, a trajectory, a summary and optionally a draft pull
request out. See docs/resolve.md.

Modules: ``urls`` (issue URLs), ``token`` (where the token comes from), ``github`` (REST client), ``gitauth``
(credentials for host git), ``environment`` (what the repository needs), ``report`` (summary.md),
``pullrequest`` (commit, push, draft pull request), ``run`` (the whole job), ``fake_github`` (a GitHub on
loopback for tests and demos).
"""
