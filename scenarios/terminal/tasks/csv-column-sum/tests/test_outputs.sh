#!/bin/bash
# A tiny test runner in bash (the image has no pytest): each check_* function is one test; the
# summary is printed in the format of `pytest -rA`, which terminal-bench's pytest parser reads.
results=()
run_test() {
    local name=$1
    if ( set -e; "$name" ) >"/tmp/.test-$name.log" 2>&1; then
        results+=("PASSED test_outputs.sh::$name")
    else
        results+=("FAILED test_outputs.sh::$name - $(tail -n 1 "/tmp/.test-$name.log")")
    fi
}
finish() {
    echo "=========================== short test summary info ============================"
    printf "%s\n" "${results[@]}"
}

check_total() { [ "$(tr -d ' \n' < /app/total.txt)" = "860" ]; }
check_by_region() { diff <(printf 'east 325\nnorth 170\nsouth 275\nwest 90\n') /app/by_region.txt; }
check_input_unchanged() { [ "$(sha256sum < /app/sales.csv | cut -c1-16)" = "9e25e62bf7c32319" ]; }

run_test check_total
run_test check_by_region
run_test check_input_unchanged
finish
