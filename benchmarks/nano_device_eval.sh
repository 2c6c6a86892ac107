#!/usr/bin/env bash
# LoopCoder-Nano's held-out table (docs/nano.md, "The held-out table") with the model servers on the device
# machine's GPU and the agent's commands run there without Docker (it has none): `swebench run --runtime-set
# sandbox.backend=local`, an unconfined LocalSandbox on a throwaway host with no network. Grading is not done
# there: the predictions come back and are graded here, in Docker (nano_eval.py --grade-only).
# One step per device call while the machine stays warm (it is released 30 s after a call). From the repo root:
#   bash benchmarks/nano_device_eval.sh part PART     copy .device/gguf/PART (carried) to /tmp/nano (3 parts)
#   bash benchmarks/nano_device_eval.sh build         join the GGUF, install .whl (pydantic, gguf; carried), build
#                                                     the checkpoints: base (untrained, R=1), r1 and r2 (the shipped
#                                                     deltas) under /tmp/nano/ckpt
#   bash benchmarks/nano_device_eval.sh eval MIN [NAME=CHECKPOINT[:think] ...]
#                                                     install .device/whl-agent (the agent's and runner's wheels,
#                                                     carried), run nano_eval.py on .device/eval (carried: the
#                                                     dataset and its bundles) for at most MIN minutes, all
#                                                     configurations at once (default: base, r1, r2, r1-think,
#                                                     r2-think of /tmp/nano/ckpt); resumable (run it again);
#                                                     hands back $OUT/eval.tgz.part-NN (run folders, without
#                                                     repositories)
set -euo pipefail
mkdir -p /tmp/nano
case "$1" in
  part)
    cp ".device/gguf/$2" /tmp/nano/ ;;
  build)
    source benchmarks/device_setup.sh
    [ -f /tmp/nano/base.gguf ] || { cat /tmp/nano/part-* > "/tmp/nano/base.gguf.$$" && mv "/tmp/nano/base.gguf.$$" /tmp/nano/base.gguf; }
    cli="python3 -m loopcoder.scenarios.cli"
    $cli model build-default --gguf /tmp/nano/base.gguf --out /tmp/nano/ckpt/r2
    $cli model build-default --gguf /tmp/nano/base.gguf --delta model_server/training/assets/nano-r1 --out /tmp/nano/ckpt/r1
    python3 -c "from loopcoder.model_server.training.base_model import import_base; import_base('/tmp/nano/ckpt/base', gguf_file='/tmp/nano/base.gguf')"
    ls /tmp/nano/ckpt/* ;;
  eval)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/whl-agent/*.whl
    source benchmarks/device_setup.sh
    git --version && python3 -m pytest --version
    # the whole import chain first: a missing wheel is one line here, not 250 failed episodes
    python3 -c "import openai, fastapi, uvicorn, loopcoder.scenarios.swebench.config, loopcoder.scenarios.swebench.evaluation, loopcoder.agent.loop, loopcoder.tools.navigation, tree_sitter_language_pack; tree_sitter_language_pack.get_parser('python')"
    ck=/tmp/nano/ckpt
    minutes=$2; shift 2
    configs=("$@")
    [ ${#configs[@]} -gt 0 ] || configs=(base=$ck/base r1=$ck/r1 r2=$ck/r2 r1-think=$ck/r1:think r2-think=$ck/r2:think)
    args=(); for c in "${configs[@]}"; do args+=(--config "$c"); done
    # nano_eval.py stops its runs cleanly on SIGTERM (servers stopped, finished episodes kept)
    timeout -s TERM -k 60 "$(( minutes * 60 ))" python3 benchmarks/nano_eval.py -d .device/eval/heldout50.jsonl \
      --repos-dir .device/eval/repos "${args[@]}" --limit 50 --workers "${WORKERS:-8}" \
      --max-batch "${WORKERS:-8}" --device cuda --parallel --no-eval \
      --runtime-set sandbox.backend=local --runtime-set local.allow=true --out /tmp/nano/eval || echo "nano_eval exit $?"
    pkill -f "loopcoder.scenarios.cli serve" || true  # servers left by a killed nano_eval (own sessions)
    for c in "${configs[@]}"; do c=${c%%=*}
      echo "$c: $(cat /tmp/nano/eval/$c/preds.jsonl 2>/dev/null | wc -l) predictions"; done
    nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
    tar -czf - -C /tmp/nano eval | split -b 15M -d - "$OUT/eval.tgz.part-" ;;
  *)
    echo "usage: $0 part PART | build | eval MINUTES" >&2; exit 2 ;;
esac
