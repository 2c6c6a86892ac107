#!/bin/bash
# Harbor verifier: reward 1 only when every check passes.
fail=0
check() { if eval "$2"; then echo "PASS $1"; else echo "FAIL $1"; fail=1; fi; }
cd /srv/site || { echo 0 > /logs/verifier/reward.txt; exit 0; }
check "start.sh mode 750" '[ "$(stat -c %a bin/start.sh)" = 750 ]'
check "start.sh still runs" '[ "$(bin/start.sh)" = started ]'
check "private mode 700" '[ -d private ] && [ ! -L private ] && [ "$(stat -c %a private)" = 700 ]'
check "keys moved" '[ "$(cat private/server.key private/client.key 2>/dev/null)" = "$(printf "k1\nk2")" ] && ! ls ./*.key >/dev/null 2>&1'
check "README kept" '[ -f README ]'
check "current -> releases/v2" '[ -L current ] && [ "$(readlink current)" = releases/v2 ]'
if [ $fail = 0 ]; then echo 1; else echo 0; fi > /logs/verifier/reward.txt
