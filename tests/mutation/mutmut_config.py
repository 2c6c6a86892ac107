"""mutmut 2 hook (copied to the scratch copy's root by tests/mutation/run.py): skip CUDA-only code.

Mutants in code that only runs on a CUDA device (graph capture and replay, the fused RMSNorm kernel call)
cannot be killed by CPU tests; they are skipped here and listed as such in the results, and the GPU tests
(tests/engine/test_engine_gpu.py, run on the device machine) are what checks that code.
"""
import ast
import functools

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


def pre_mutation(context):
    line = context.mutation_id.line_number + 1  # mutmut counts lines from 0
    if cuda_only(context.filename, line, context.current_source_line):
        context.skip = True
