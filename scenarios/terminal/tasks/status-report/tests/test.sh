#!/bin/bash
# Harbor verifier with several rewards: /logs/verifier/reward.json. "reward" is 1 only when the whole
# report is right; "lines_correct" is the share of expected lines present.
expected=$'200 12\n301 2\n404 3\n500 2\n503 1'
total=$(printf '%s\n' "$expected" | wc -l)
have=0
if [ -f /app/report.txt ]; then
    while IFS= read -r line; do
        grep -qxF -- "$line" /app/report.txt && have=$((have + 1))
    done <<< "$expected"
fi
reward=0
[ -f /app/report.txt ] && [ "$(cat /app/report.txt)" = "$expected" ] && reward=1
share=$(awk -v h="$have" -v t="$total" 'BEGIN {printf "%.2f", h / t}')
printf '{"reward": %d, "lines_correct": %s}\n' "$reward" "$share" > /logs/verifier/reward.json
cat /logs/verifier/reward.json
