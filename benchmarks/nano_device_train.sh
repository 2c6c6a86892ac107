#!/usr/bin/env bash
# LoopCoder-Nano training on the device machine (docs/nano.md, "Training on the GPU host"), one step per
# device call while the machine stays warm (it is released 30 s after a call). From the repository root:
#   bash benchmarks/nano_device_train.sh part PART        copy .device/gguf/PART (carried) to /tmp/nano
#   bash benchmarks/nano_device_train.sh train RUN MIN    join the GGUF parts once, copy .device/runs/RUN (carried,
#                                                         made by `loopcoder train --prepare-only`) to /tmp/nano
#                                                         once, train for at most MIN minutes (resumable: run it
#                                                         again in the next call), hand back RUN.tar.part-NN
#                                                         under $OUT/RUN: config, loss log and loss.png, and the
#                                                         state to resume from (once finished: the delta instead)
# Two runs can share one call and the GPU (docs/nano.md has the rates measured alone and side by side):
#   bash benchmarks/nano_device_train.sh train RUN_A 9 & sleep 20; bash benchmarks/nano_device_train.sh train RUN_B 9; wait
# The GGUF is 98 MB and a call carries 64 MiB with the tree, so it travels in three parts
# (split -n 3 -d SmolLM2-135M-Instruct.Q4_1.gguf .device/gguf/part-); its sha256 is checked on every start.
set -euo pipefail
mkdir -p /tmp/nano
case "$1" in
  part)
    cp ".device/gguf/$2" /tmp/nano/ ;;
  train)
    run=$2
    source benchmarks/device_setup.sh
    # written whole, then renamed: a second run started alongside never reads half a file
    [ -f /tmp/nano/base.gguf ] || { cat /tmp/nano/part-* > "/tmp/nano/base.gguf.$$" && mv "/tmp/nano/base.gguf.$$" /tmp/nano/base.gguf; }
    [ -d "/tmp/nano/$run" ] || cp -r ".device/runs/$run" /tmp/nano/
    python3 -m loopcoder.model_server.training "/tmp/nano/$run" --device cuda --gguf /tmp/nano/base.gguf \
      --max-minutes "$3"
    # At most 8 files of 16 MiB come back, so a run comes back as one tar in 15 MiB parts: config, loss log
    # and plot, and state/ to resume from, or, once finished, delta/ alone (10.5 MB: one part). Here:
    # cat RUN.tar.part-* | tar -x -C .device/runs
    mkdir -p "$OUT/$run"
    keep=state; [ -d "/tmp/nano/$run/delta" ] && keep=delta
    (cd /tmp/nano && tar -cf - $(ls "$run/config.json" "$run/loss.jsonl" "$run/loss.png" 2>/dev/null) "$run/$keep") \
      | split -b 15M -d - "$OUT/$run/$run.tar.part-"
    nvidia-smi --query-gpu=name,memory.used --format=csv,noheader ;;
  *)
    echo "usage: $0 part PART | train RUN MINUTES" >&2; exit 2 ;;
esac
