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

check_file_exists() { test -f /app/hello.txt; }
check_exact_content() { [ "$(od -An -c /app/hello.txt | tr -s ' ')" = "$(printf 'Hello, world!\n' | od -An -c | tr -s ' ')" ]; }

run_test check_file_exists
run_test check_exact_content
finish
