"""Merge the results of named.py and run.py into one JSON file and print the survivors as a markdown table.

    .venv/bin/python tests/mutation/report.py --named named.json --mutmut a.json b.json --out RESULT.json

Each surviving mutmut mutant gets the reason it was left alive, from WHY below (matched on file and the
changed text); a survivor with no reason is printed as UNEXPLAINED.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

EQUIV = "equivalent"
# (file suffix, text in the original line, text in the mutated line) -> (kind, why)
WHY = [
    ("engine/sampler.py", "(-1)", "(+1)", (EQUIV, "logits are always [B, V]: dim +1 is dim -1")),
    ("engine/sampler.py", "shape[-1]", "shape[+1]", (EQUIV, "logits are always [B, V]: dim +1 is dim -1")),
    ("engine/sampler.py", "cumsum(-1)", "cumsum(+1)", (EQUIV, "logits are always [B, V]: dim +1 is dim -1")),
    ("engine/sampler.py", "sort(-1", "sort(+1", (EQUIV, "logits are always [B, V]: dim +1 is dim -1")),
    ("engine/sampler.py", "dev = logits.device", "dev = None",
     ("cuda-only", "device=None is the CPU: only a CUDA run puts the temperatures on the wrong device")),
    ("engine/sampler.py", "1e-5", "2e-05",
     (EQUIV, "the floor only guards the division for greedy rows (answered by argmax); 1e-5 and 2e-5 are "
             "both far below any temperature a caller sends")),
    ("engine/sampler.py", "< vocab", "<= vocab", (EQUIV, "top_k equal to the vocabulary keeps every token either way")),
    ("engine/sequence.py", '= "', '= "XX',
     (EQUIV, "Status members are compared by identity; their values are never read")),
    ("engine/sequence.py", '= "', "= None", (EQUIV, "Status members are compared by identity; their values are never read")),
    ("engine/sequence.py", " | None", " & None",
     (EQUIV, "annotations are not evaluated (from __future__ import annotations)")),
    ("engine/sequence.py", "generator: torch.Generator | None = None", '= ""',
     (EQUIV, "`seq.generator or default` treats '' like None")),
    ("engine/sequence.py", "num_emitted: int = 0", "= None",
     (EQUIV, "output_ids[None:] equals output_ids[0:]; the field is set to an int at the first event")),
    ("engine/model_runner.py", "non_blocking=True", "non_blocking=False",
     ("performance-only", "a synchronous copy gives the same values")),
    ("engine/model_runner.py", "sin.repeat(rows, 1, 1)", "sin.repeat(rows, 2, 1)",
     (EQUIV, "broadcasting doubles the query length; only position 0 of q/k/v is read, the same values")),
    ("engine/model_runner.py", "self._static: dict[str, torch.Tensor] = {}", "= None",
     ("cuda-only", "the static graph inputs are read only when CUDA graphs were captured")),
    ("engine/model_runner.py", "batch = len(seqs)", "batch = None",
     ("cuda-only", "batch only picks a captured CUDA graph; with none captured (CPU) the eager step runs")),
    ("engine/model_runner.py", "CUDA graphs", "",
     ("cuda-only", "the decorator of capture_graphs, which runs only on a CUDA device")),
    ("engine/model_runner.py", "@torch.no_grad()", "",
     ("performance-only", "without no_grad autograd records the step's graph: more memory and time, the "
                          "same values")),
    *[(f"engine/{name}.py", " | None", " & None", (EQUIV, "annotations are not evaluated (from __future__ "
                                                          "import annotations)"))
      for name in ("llm_engine", "model_runner", "scheduler", "block_manager", "grammar")],  # not the pydantic
    # models of types.py and config.py: pydantic evaluates their annotations
    ("engine/llm_engine.py", 'raise ValueError("the prompt is empty")', "XX",
     ("message-text", "the test matches the word 'empty', which the XX-wrapped message keeps")),
    ("engine/llm_engine.py", 'self._finish(seq, "error", events)', "XXerrorXX",
     ("unreachable", "a token the grammar rejects: the bitmask lets only accepted tokens be sampled, so this "
                     "defensive branch does not run")),
    ("engine/llm_engine.py", "arrivals = arrivals or [0] * len(prompts)", "[1]",
     (EQUIV, "offline generate() with no arrivals given: every request starting one step later gives the "
             "same tokens")),
    ("engine/llm_engine.py", "daemon=True", "daemon=False",
     (EQUIV, "the engine thread is always stopped explicitly; daemon only matters at interpreter exit")),
    ("engine/llm_engine.py", "self._thread.join, 10", "self._thread.join, 11", (EQUIV, "a join timeout of 10 or 11 s")),
    ("tools/workspace.py", "NOT_FOLLOWED =", "XX",
     ("message-text", "the tests match 'symlink' or the full text in one place; XX around it keeps the words")),
    ("tools/workspace.py", "os.set_blocking(fd, True)", "os.set_blocking(fd, False)",
     (EQUIV, "reached only for regular files (checked just before), which never block")),
    ("tools/workspace.py", "created = False", "created = None", (EQUIV, "only read as `not created`")),
    ("tools/workspace.py", "(st.st_uid, st.st_gid) != (0, 0)", "(",
     (EQUIV, "a root-owned root then gives owner (0, 0): chown to root as root changes nothing; owners "
             "(1, 0) and (0, 1) do not occur here")),
    ("tools/workspace.py", "os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC", "&",
     (EQUIV, "the root is always a folder (O_DIRECTORY only checks that); without O_CLOEXEC the fd, closed "
             "before this call returns, could only leak into a process another thread starts meanwhile")),
    ("tools/workspace.py", "as a folder: it vanished", "",
     ("race-only", "a folder that disappears between the failed open and the mkdir of _enter; message only")),
    ("tools/workspace.py", "cannot write {self.rel(path)}: not a regular file ({_kind(before.st_mode)})", "XX",
     ("message-text", "reached when opening a non-regular file for writing succeeds (a FIFO with a reader, a "
                      "device node); the FIFO test has no reader, so it gets the ENXIO message")),
    ("tools/workspace.py", "owner = None  # made meanwhile", 'owner = ""', (EQUIV, "only read as `if owner`")),
    ("tools/workspace.py", '(stat.S_ISLNK, "a symlink")', '"XXa symlinkXX"',
     ("unreachable", "_kind describes an open fd's mode: with O_NOFOLLOW an fd never refers to a symlink")),
    ("tools/workspace.py", '(stat.S_ISSOCK, "a socket")', '"XXa socketXX"',
     ("unreachable", "opening a socket fails (ENXIO, 'a FIFO or socket'), so _kind never sees one")),
    ("tools/workspace.py", '"a character device"', '"XXa character deviceXX"',
     ("message-text", "needs a device node in the workspace (mknod); no fast test makes one")),
    ("tools/workspace.py", '"a block device"', '"XXa block deviceXX"',
     ("message-text", "needs a device node in the workspace (mknod); no fast test makes one")),
    ("tools/workspace.py", 'return "not a regular file"', "XX",
     ("unreachable", "the fallback after every file type Linux has")),
    ("engine/scheduler.py", "break", "continue",
     (EQUIV, "`if budget <= 0`: every later candidate meets the same test, so skipping them all equals stopping")),
    ("engine/scheduler.py", "self.num_preemptions += 1", "",
     ("gap", "a counter only the tests read, and only as `> 0` (or `== 0`); not exported in the stats")),
    ("engine/grammar.py", "os.cpu_count() or 1", "or 2", (EQUIV, "os.cpu_count() is never None here")),
    ("engine/grammar.py", "os.cpu_count() or 1", "and 1",
     ("performance-only", "xgrammar with one thread gives the same masks")),
    ("engine/grammar.py", "self._batch = None", '= ""', (EQUIV, "replaced in _xgr() before its first use")),
    ("engine/grammar.py", "self.stop_token_ids = sorted(stop_token_ids)", "= None",
     ("gap", "xgrammar then takes the tokenizer's own stop tokens, which are the test checkpoints' EOS; a "
             "checkpoint whose generation_config adds EOS ids would end grammars differently (not cheap to "
             "build here)")),
    ("engine/sampler.py", "logp[:, :0].long())", "logp[:, :1].long())",
     (EQUIV, "k == 0: the ids are zipped with zero values, so the one extra id column is never read")),
    ("engine/block_manager.py", "if parent.num_computed % self.block_size == 0:", "== 1", ("outside-target", "fork code (n > 1): the fork tests of test_engine_sampling_features.py (target `forks`) "
                        "fail on it, run by hand; they are not in the engine-fast target")),
    ("engine/block_manager.py", "copy = self._take_block()", "copy = None", ("outside-target", "fork code (n > 1): the fork tests of test_engine_sampling_features.py (target `forks`) "
                        "fail on it, run by hand; they are not in the engine-fast target")),
    ("engine/scheduler.py", "child.status, child.num_computed = Status.WAITING, 0", "WAITING, 1", ("outside-target", "fork code (n > 1): the fork tests of test_engine_sampling_features.py (target `forks`) "
                        "fail on it, run by hand; they are not in the engine-fast target")),
    ("engine/scheduler.py", "child.status = Status.RUNNING", "child.status = None",
     (EQUIV, "no code compares a status with RUNNING (only WAITING and FINISHED)")),
    ("engine/block_manager.py", "partial = parent.num_computed % self.block_size != 0", "/ self.block_size",
     ("gap", "a fork then waits for a free block it does not need when the parent's length is a multiple of "
             "the block size and no block is free: slower admission, same tokens (the fork tests pass on it)")),
    ("engine/llm_engine.py", "pending += [child for seq in pending for child in seq.forks]", "pending -=", ("outside-target", "the engine-failure path: tests/api/test_api_real_engine.py::"
                       "test_engine_failure_mid_answer_is_reported_and_the_server_goes_on fails on it, run by hand "
                       "(7 min under load); the API tests are not in the llm-engine target")),
    ("engine/llm_engine.py", 'events = self.engine.fail_all("error")', "XXerrorXX", ("outside-target", "the engine-failure path: tests/api/test_api_real_engine.py::"
                       "test_engine_failure_mid_answer_is_reported_and_the_server_goes_on fails on it, run by hand "
                       "(7 min under load); the API tests are not in the llm-engine target")),
    ("engine/model_runner.py", "cos.repeat(rows, 1, 1)", "cos.repeat(rows, 2, 1)",
     (EQUIV, "broadcasting doubles the query length; only position 0 of q/k/v is read, the same values")),
    ("engine/grammar.py", "ALL_ALLOWED = -1", "ALL_ALLOWED = +1",
     ("closed-by-hand", "a test added after this run fails on it (test_engine_sampling_features.py::test_a_request_without_grammar_is_unmasked_beside_one_with_a_grammar; the mutation applied by hand "
                       "and the test run); not re-run by mutmut for lack of time")),
    ("engine/grammar.py", 'if spec.kind == "ebnf":', "XXebnfXX",
     ("closed-by-hand", "a test added after this run fails on it (test_engine_sampling_features.py::test_ebnf_grammars_compile_and_bad_ones_say_which_kind; the mutation applied by hand "
                       "and the test run); not re-run by mutmut for lack of time")),
    ("engine/grammar.py", 'raise GrammarError(f"invalid', "XXinvalid",
     ("closed-by-hand", "a test added after this run fails on it (test_engine_sampling_features.py::test_ebnf_grammars_compile_and_bad_ones_say_which_kind; the mutation applied by hand "
                       "and the test run); not re-run by mutmut for lack of time")),
    ("engine/config.py", 'num_loops: int | None = Field(None, ge=1', "num_loops: int | None = None",
     ("closed-by-hand", "a test added after this run fails on it (test_engine_units.py::test_defaults_penalise_nothing_and_equal_the_documented_config; the mutation applied by hand "
                       "and the test run); not re-run by mutmut for lack of time")),
    ("engine/config.py", 'description="', 'description="XX',
     ("message-text", "a field's description (JSON schema and docs), not behaviour")),
    ("tools/workspace.py", '"', '"XX',
     (EQUIV, "a dot-named SKIP_DIRS entry: list_files skips every name starting with '.' before it "
             "looks at SKIP_DIRS (search.py's ripgrep excludes use the set too; those tests skip here "
             "without ripgrep)")),
    ("tools/workspace.py", "entry.stat(follow_symlinks=False)", "entry.stat(follow_symlinks=True)",
     (EQUIV, "reached only when entry.is_file(follow_symlinks=False): the entry is no symlink")),
    ("tools/workspace.py", "timeout=60", "timeout=61", (EQUIV, "a git ls-files that takes between 60 and 61 s")),
]


def why(m: dict) -> tuple[str, str]:
    for suffix, before, after, reason in WHY:
        if (m.get("file") or "").endswith(suffix) and before in m["before"] and after in m["after"]:
            return reason
    return "UNEXPLAINED", ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--named", required=True)
    ap.add_argument("--mutmut", nargs="+", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--meta", default=None, help="a JSON file (commands, sample rate, ...) merged in at the top")
    args = ap.parse_args()
    named = json.loads(Path(args.named).read_text())
    runs = [json.loads(Path(p).read_text()) for p in args.mutmut]
    merged = {**(json.loads(Path(args.meta).read_text()) if args.meta else {}), "named_mutations": named,
              "mutmut": []}
    print("| file:line | change | kind | why |\n|---|---|---|---|")
    for run in runs:
        for m in run["survived"]:
            m["kind"], m["why"] = why(m)
            before, after = (m[k][:60].replace("|", "\\|") for k in ("before", "after"))
            print(f"| {m['file']}:{m['line']} | `{before}` → `{after}` | {m['kind']} | {m['why']} |")
        merged["mutmut"].append({"tool": run["tool"], "runs": run["runs"], "counts": run["counts"],
                                 "per_file": run.get("per_file", {}),
                                 "survived": run["survived"], "timeout": run["timeout"],
                                 "skipped": len(run["skipped"])})
    Path(args.out).write_text(json.dumps(merged, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
