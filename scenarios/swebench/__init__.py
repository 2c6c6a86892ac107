"""SWE-bench: datasets (and the bundled mini set), environment images, and grading (`loopcoder swebench`).

Modules: ``dataset`` (load, validate, repository sources), ``environment`` (instance -> image spec, eval
script, log parser), ``images`` (build or pull), ``evaluation`` (one instance: checkout, patches, sandbox,
two verdicts), ``tamper`` (test-infrastructure flags), ``junit`` (the structured verdict), ``batch``
(a run and its reports), ``predictions`` (the official predictions format). Docs: docs/swebench.md.
"""
