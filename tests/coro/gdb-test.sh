#!/bin/sh
# tools.gdb: runs gdb_target under gdb with tools/gdb/ioplex-coro.py and checks that
# `info coroutines` lists the three parked coroutines and that `coroutine bt` shows
# each one's own stack (the function it parked in). 77 = skipped (no gdb, or the
# environment forbids ptrace).
# usage: gdb-test.sh TARGET SCRIPT
target=$1 script=$2
command -v gdb >/dev/null 2>&1 || { echo "gdb not installed: skipped"; exit 77; }
# LeakSanitizer cannot run under ptrace (sanitizer builds).
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
out=$(gdb -q -batch -nx -ex 'set debuginfod enabled off' -ex 'break gdb_all_parked' -ex run \
    -ex "source $script" -ex 'info coroutines' \
    -ex 'coroutine bt 0' -ex 'coroutine bt 1' -ex 'coroutine bt 2' \
    -ex continue "$target" 2>&1)
status=$?
echo "$out"
case $out in
*"ptrace: Operation not permitted"*|*"Couldn't get registers"*|*"not permitted"*)
    echo "gdb cannot trace here: skipped"; exit 77 ;;
esac
[ $status -eq 0 ] || { echo "FAIL: gdb exited $status"; exit 1; }
fail=0
for want in "'sleeper'" "'receiver'" "'greenlet'" deep_in_sleeper waiting_on_channel switched_away \
    "gdb_target: done"; do
    case $out in
    *"$want"*) ;;
    *) echo "FAIL: no '$want' in gdb's output"; fail=1 ;;
    esac
done
# Each backtrace belongs to its coroutine: the sleeper's shows its recursion.
n=$(printf '%s\n' "$out" | grep -c 'deep_in_sleeper')
[ "$n" -ge 4 ] || { echo "FAIL: the sleeper's backtrace shows $n deep_in_sleeper frames, not 4"; fail=1; }
exit $fail
