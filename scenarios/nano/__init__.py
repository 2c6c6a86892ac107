"""LoopCoder-Nano: SWE-bench tasks synthesized from real packages (``synth.py``), see docs/nano.md."""
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
HELDOUT = DATA_DIR / "heldout.jsonl"  # a few held-out instances, bundled for `make demo` and the tests
REPOS = DATA_DIR / "repos"  # their git bundles, one per instance (<instance_id>.bundle)
