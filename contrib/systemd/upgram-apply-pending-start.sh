#!/bin/sh
# A launcher for an application upgram keeps up to date (C9, [0094]-[0095]): upgrades that wait
# for the program's next start are completed before it runs, and the ones that wait for its
# exit are completed after it exits (the same process: the launcher waits for the program).
#
# Usage: upgram-apply-pending-start.sh ROOT PROGRAM [ARGS...]
set -u
root=$1
shift
upgram apply-pending --trigger program-start --root "$root" || echo "upgram: pending upgrades not completed" >&2
"$@" &
program=$!
wait "$program"
status=$?
upgram apply-pending --trigger program-exit --wait-pid "$program" --root "$root" || echo "upgram: pending upgrades not completed" >&2
exit "$status"
