"""mutmut 2 hook (copied to the scratch copy's root by tests/mutation/run.py): skip CUDA-only code, sample.

Mutants in code that only runs on a CUDA device (graph capture and replay, the fused RMSNorm kernel call)
cannot be killed by CPU tests; they are skipped here and listed as such in the results, and the GPU tests
(tests/engine/test_engine_gpu.py, run on the device machine) are what checks that code.

Where a whole file would take too long on a 2-core machine, two environment variables restrict the run
(skipped mutants are reported as skipped): MUTMUT_ONLY_FUNCTIONS (comma-separated function names: mutants
elsewhere are skipped) and MUTMUT_SAMPLE_EVERY=N (keep one mutant in N, chosen by a stable hash of file,
line and mutation index, so a re-run picks the same ones).
"""
import ast
import functools
import hashlib
import os

# (file suffix, function name): every line of the function is CUDA-only
CUDA_ONLY_FUNCTIONS = {("engine/model_runner.py", "capture_graphs")}
# (file suffix, function name, text in the line): single CUDA-only lines
CUDA_ONLY_LINES = {
    ("engine/model_runner.py", "_norm", "x.is_cuda"),
    ("engine/model_runner.py", "_norm", "F.rms_norm"),
    ("engine/model_runner.py", "decode", "self.graphs"),
    ("engine/model_runner.py", "decode", "st["),
    ("engine/model_runner.py", "decode", "st = self._static"),
    ("engine/model_runner.py", "decode", "graph"),
    ("engine/model_runner.py", "decode", "logits[:batch]"),
    ("engine/model_runner.py", "decode", "if size is None"),
    ("engine/llm_engine.py", "__init__", "cuda_graphs"),
    ("engine/llm_engine.py", "__init__", "capture_graphs"),
}


@functools.lru_cache(maxsize=None)
def _functions(filename):
    """[(first line, last line, name)] of every function in the file (1-based, inclusive)."""
    tree = ast.parse(open(filename).read())
    return [(n.lineno, n.end_lineno, n.name) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def enclosing_function(filename, line):
    inner = [(first, name) for first, last, name in _functions(filename) if first <= line <= last]
    return max(inner)[1] if inner else None


def cuda_only(filename, line, text):
    func = enclosing_function(filename, line)
    if any(filename.endswith(f) and func == name for f, name in CUDA_ONLY_FUNCTIONS):
        return True
    return any(filename.endswith(f) and func == name and needle in text for f, name, needle in CUDA_ONLY_LINES)


def sampled_out(filename, line, index):
    only = [f for f in os.environ.get("MUTMUT_ONLY_FUNCTIONS", "").split(",") if f]
    if only and enclosing_function(filename, line) not in only:
        return True
    every = int(os.environ.get("MUTMUT_SAMPLE_EVERY", "1"))
    digest = hashlib.sha256(f"{filename}:{line}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % every != 0


def pre_mutation(context):
    line = context.mutation_id.line_number + 1  # mutmut counts lines from 0
    if cuda_only(context.filename, line, context.current_source_line):
        context.skip = True
    elif sampled_out(context.filename, line, context.mutation_id.index):
        context.skip = True
