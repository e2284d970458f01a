#!/bin/sh
# A launcher for an application upgram keeps up to date: upgrades that wait for the program's
# next start are completed before it runs, and the ones that wait for its exit are completed
# after it exits (the same process: the launcher waits for the program).
#
# SIGTERM and SIGHUP sent to the launcher (`systemctl stop`, `kill`) are passed on to the
# program; SIGINT (Ctrl-C) is passed on as SIGTERM, since a program that sh starts in the
# background ignores SIGINT. The launcher still waits for the program to exit, completes what
# waited for the exit, and exits with the program's status.
#
# Usage: upgram-apply-pending-start.sh ROOT PROGRAM [ARGS...]
set -u
root=$1
shift
upgram apply-pending --trigger program-start --root "$root" || echo "upgram: pending upgrades not completed" >&2
forwarded=
forward() {
  forwarded=1
  kill -s "$1" "$program" 2>/dev/null || :
}
trap 'forward TERM' TERM INT
trap 'forward HUP' HUP
"$@" &
program=$!
wait "$program"
status=$?
# A forwarded signal ends `wait` early (status above 128) while the program may still run: wait
# again until it has exited (127: it already had, and its status is the one in hand).
while [ -n "$forwarded" ] && [ "$status" -gt 128 ]; do
  forwarded=
  wait "$program"
  again=$?
  [ "$again" -eq 127 ] || status=$again
done
trap - TERM INT HUP
upgram apply-pending --trigger program-exit --wait-pid "$program" --root "$root" || echo "upgram: pending upgrades not completed" >&2
exit "$status"
