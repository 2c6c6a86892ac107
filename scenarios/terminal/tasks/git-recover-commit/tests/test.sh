#!/bin/bash
# Harbor verifier: writes 1 or 0 to /logs/verifier/reward.txt.
ok=1
[ "$(cat /app/recovered.txt 2>/dev/null)" = "the launch code is 7-4-1-9" ] || { echo "recovered.txt is wrong or missing"; ok=0; }
cd /app/repo
[ "$(git log --format=%s main | head -n 1)" = "first" ] || { echo "main moved"; ok=0; }
[ ! -e secret.txt ] || { echo "secret.txt must not be restored into the work tree"; ok=0; }
echo "$ok" > /logs/verifier/reward.txt
