"""A fork server for mutation testing: import torch and transformers once, fork a fresh pytest per mutant.

mutmut 2 runs its test command once per mutant; importing torch and transformers takes 5-10 s on this
machine, longer than most of the tests it would run. The server imports them (and pytest) once but
nothing of ``loopcoder``; each ``client`` call makes it fork a child that imports ``loopcoder`` from disk
(where mutmut has just written the mutant) and runs pytest on the target's tests. The client exits with
pytest's exit code, which is all mutmut reads.

    python tests/mutation/forkserver.py serve SOCKET
    python tests/mutation/forkserver.py client SOCKET TARGET      # the mutmut runner command
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time

# Which tests each mutated file is checked against: the fast tests that exercise it, most sensitive first
# (pytest stops at the first failure).
TARGETS = {
    "sampler": ["tests/engine/test_engine_sampling.py"],
    # the sampler with its bias, penalties, grammar masks and logprobs
    "sampler-all": ["tests/engine/test_engine_sampling.py", "tests/engine/test_engine_sampling_features.py"],
    # grammar masks in the engine, then through the API's structured outputs
    "grammar": ["tests/engine/test_engine_sampling_features.py", "tests/api/test_api_structured_outputs.py"],
    "engine": ["tests/engine/test_engine_logits.py", "tests/engine/test_engine.py"],
    # one engine run that chunks, queues, preempts and finishes requests, fused and sequential
    "engine-fast": ["tests/engine/test_engine_units.py",
                    "tests/engine/test_engine_logits.py::test_plt_logits_equal_full_forward",
                    "tests/engine/test_engine.py::test_finish_reasons_and_events",
                    "tests/engine/test_engine.py::test_abort_frees_blocks_and_slot",
                    "tests/engine/test_engine.py::test_bad_requests_raise_at_submit"],
    "llm-engine": ["tests/engine/test_engine_units.py",
                   "tests/engine/test_engine_sampling.py::test_checkpoint_eos_stops_the_request_unless_ignored",
                   "tests/engine/test_engine_logits.py::test_plt_logits_equal_full_forward",
                   "tests/engine/test_engine.py", "tests/engine/test_engine_sampling_features.py"],
    # the decode path: logits of fused and sequential decode against the model's own forward
    "engine-decode": ["tests/engine/test_engine_logits.py", "tests/engine/test_engine_units.py"],
    # model_runner.py: the decode path, then the pool sizes and the fork's cache copy (n > 1)
    "runner": ["tests/engine/test_engine_logits.py", "tests/engine/test_engine_units.py",
               "tests/engine/test_engine.py::test_kv_bytes_per_token_do_not_grow_with_loops",
               "tests/engine/test_engine_sampling_features.py::test_forks_equal_independent_requests_with_the_next_seeds",
               "tests/engine/test_engine_sampling_features.py::test_forks_without_room_wait_and_recompute_exactly"],
    # n > 1: forks share the prompt's blocks, wait for slots, recompute (block_manager.py, scheduler.py)
    "forks": ["tests/engine/test_engine_units.py",
              "tests/engine/test_engine_sampling_features.py::test_forks_equal_independent_requests_with_the_next_seeds",
              "tests/engine/test_engine_sampling_features.py::test_forks_without_room_wait_and_recompute_exactly",
              "tests/engine/test_engine_sampling_features.py::test_aborting_a_fork_before_it_starts_and_the_parent_while_queued"],
    "workspace": ["tests/tools/test_tools_mutation_gaps.py", "tests/tools/test_tools_paths_search_view.py",
                  "tests/tools/test_tools_editing.py", "tests/tools/test_tools_registry_and_repomap.py",
                  "tests/tools/test_tools_workspace_confinement.py", "tests/tools/test_tools_workspace_writes.py",
                  "-m", "not slow and not docker"],
}
CHILD_TIMEOUT = 300  # seconds; mutmut's own timeout (10x the baseline) normally fires first


def _preload() -> None:
    import pytest  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel  # noqa: F401
    from transformers.modeling_outputs import CausalLMOutputWithPast  # noqa: F401
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: F401
    import safetensors.torch  # noqa: F401
    import tokenizers  # noqa: F401
    import pydantic  # noqa: F401


def _run_child(args: list[str]) -> None:
    sys.dont_write_bytecode = True  # mutmut rewrites a file within the same second: never trust a .pyc
    devnull = os.open(os.devnull, os.O_WRONLY)
    if not os.environ.get("FORKSERVER_VERBOSE"):
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    import pytest
    import torch

    torch.set_num_threads(1)  # the machine is shared: spinning thread pools cost more than they give
    code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", *args])
    os._exit(int(code))


def serve(path: str) -> None:
    if any(name == "loopcoder" or name.startswith("loopcoder.") for name in sys.modules):
        raise SystemExit("the fork server must not import loopcoder before forking")
    _preload()
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    print(f"fork server ready on {path}", flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            request = json.loads(conn.makefile().readline())
            args = TARGETS[request["target"]]
            pid = os.fork()
            if pid == 0:
                server.close()
                os.setsid()
                _run_child(args)
            deadline = time.monotonic() + CHILD_TIMEOUT
            code = None
            while code is None:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    code = os.waitstatus_to_exitcode(status)
                    break
                # the client went away (mutmut's timeout killed it): kill the child too
                gone = _peer_closed(conn)
                if gone or time.monotonic() > deadline:
                    os.killpg(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    code = -9
                    break
                time.sleep(0.05)
            try:
                conn.sendall(f"{code}\n".encode())
            except OSError:
                pass


def _peer_closed(conn: socket.socket) -> bool:
    conn.setblocking(False)
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        conn.setblocking(True)


def client(path: str, target: str) -> int:
    if target not in TARGETS:
        raise SystemExit(f"unknown target {target!r}; one of {', '.join(TARGETS)}")
    # No answer from the server is no verdict: exit 0 (mutmut records "survived", and a re-run with the same
    # workdir tests the mutant again). Any other exit would count as "killed": a dead server (its run.py
    # stopped while mutmut went on) would kill every mutant in seconds.
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        conn.sendall((json.dumps({"target": target}) + "\n").encode())
        reply = conn.makefile().readline().strip()
    except OSError as exc:
        print(f"fork server unreachable ({exc}); mutant left untested, reported as survived", file=sys.stderr)
        return 0
    if not reply:
        print("fork server closed the connection; mutant left untested, reported as survived", file=sys.stderr)
        return 0
    # mutmut 2 counts only exit code 1 as a kill; pytest answers 2 (collection errors) or 4 (a conftest that
    # cannot import) when a mutant breaks an import, and those failures must count too
    return 0 if int(reply) == 0 else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2])
    elif sys.argv[1:2] == ["client"]:
        sys.exit(client(sys.argv[2], sys.argv[3]))
    else:
        raise SystemExit(__doc__)
