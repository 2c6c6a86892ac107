#!/bin/bash
# Issue 14, async scheduling, on the device machine in one call (docs/gpu.md): benchmarks/engine.py with
# async scheduling on and off side by side (R=1 and R=2, batch 1 and 32, rooflines measured in the same
# run), then the engine's GPU tests. Run from this checkout's root: bash benchmarks/h200_async.sh OUT
out=${1:?OUT}
source benchmarks/device_setup.sh
timeout 200 python3 benchmarks/engine.py --steps 40 --out "$out/engine-h200-async.json" 2>&1 | grep -v "Warning\|warn("
timeout 100 python3 -m pytest -m gpu tests/engine -q -p no:cacheprovider > "$out/gpu-tests-async.log" 2>&1
tail -15 "$out/gpu-tests-async.log"
