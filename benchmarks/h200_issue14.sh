#!/bin/bash
# Issue 14's decode measurements on the device machine, this branch side by side with a baseline tree,
# in one call (docs/gpu.md). Run from this checkout's root: bash benchmarks/h200_issue14.sh OUT BASE_TREE
# OUT: where JSONs and logs go; BASE_TREE: a copy of the baseline commit whose benchmarks/ holds this
# branch's engine.py and profile_decode.py (same measurement code for both trees).
out=${1:?OUT}; base=${2:?BASE_TREE}
here=$PWD
source benchmarks/device_setup.sh
{ python3 -m pytest -m gpu tests/engine tests/model -q -p no:cacheprovider
  python3 -m pytest -m gpu tests/kernels/test_gswa_gpu.py -k "rope or rms" -q -s -p no:cacheprovider; } \
  > "$out/gpu-tests.log" 2>&1; tail -3 "$out/gpu-tests.log"
timeout 150 python3 benchmarks/engine.py --steps 30 --out "$out/engine-h200.json" 2>&1 | grep "^\[" 
timeout 100 python3 benchmarks/profile_decode.py --out "$out/profile-decode-h200.json" 2>&1 | grep "^\[R"
(cd "$base" && source benchmarks/device_setup.sh &&
 timeout 150 python3 benchmarks/engine.py --steps 30 --out "$out/engine-h200-main.json" 2>&1 | grep "^\[" &&
 timeout 100 python3 benchmarks/profile_decode.py --out "$out/profile-decode-h200-main.json" 2>&1 | grep "^\[R")
cd "$here" && source benchmarks/device_setup.sh
timeout 150 python3 benchmarks/grammar.py --steps 20 --out "$out/grammar-h200.json" 2>&1 | grep "b1\|b32"
