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

setup() {
    rm -rf /tmp/bk && mkdir -p "/tmp/bk/in dir"
    printf 'a\n' > "/tmp/bk/in dir/plain.log"
    printf 'b\n' > "/tmp/bk/in dir/with space.log"
    printf 'c\n' > "/tmp/bk/in dir/notes.txt"
}
check_copies_logs_with_spaces() {
    setup
    out=$(/app/backup.sh "/tmp/bk/in dir" "/tmp/bk/out dir")
    [ -f "/tmp/bk/out dir/plain.log" ] && [ -f "/tmp/bk/out dir/with space.log" ] && [ "$(cat "/tmp/bk/out dir/with space.log")" = b ]
}
check_prints_count() {
    setup
    [ "$(/app/backup.sh "/tmp/bk/in dir" /tmp/bk/out2 | tail -n 1)" = 2 ]
}
check_skips_other_files() {
    setup
    /app/backup.sh "/tmp/bk/in dir" /tmp/bk/out3 >/dev/null
    [ ! -e /tmp/bk/out3/notes.txt ]
}

run_test check_copies_logs_with_spaces
run_test check_prints_count
run_test check_skips_other_files
finish
