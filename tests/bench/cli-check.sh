#!/usr/bin/env bash
# A benchmark tool's command line: --help prints its usage to stdout and exits 0;
# an unknown option is named on stderr and exits 2.
# usage: cli-check.sh PROGRAM
set -uo pipefail
prog=$1
name=$(basename "$prog")
fail() { echo "cli: $name: FAIL: $*"; exit 1; }
out=$("$prog" --help 2>/dev/null)
status=$?
[ "$status" -eq 0 ] || fail "--help exited $status"
grep -q "^usage: " <<<"$out" || fail "--help printed no usage to stdout"
err=$("$prog" --no-such-option 2>&1 >/dev/null)
status=$?
[ "$status" -eq 2 ] || fail "an unknown option exited $status"
grep -q -- "'--no-such-option'" <<<"$err" || fail "an unknown option is not named: $err"
echo "cli: $name: ok"
