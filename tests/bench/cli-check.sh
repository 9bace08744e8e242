#!/usr/bin/env bash
# A benchmark tool's command line: --help prints its usage to stdout and exits 0;
# an unknown option is named on stderr and exits 2; so is the bad value of each
# further argument given, OPTION=VALUE.
# usage: cli-check.sh PROGRAM [OPTION=VALUE...]
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
shift
for bad in "$@"; do
    opt=${bad%%=*} value=${bad#*=}
    err=$("$prog" "$opt" "$value" 2>&1 >/dev/null)
    status=$?
    [ "$status" -eq 2 ] || fail "$opt '$value' exited $status"
    grep -q -- "'$value'" <<<"$err" || fail "$opt '$value' is not named: $err"
done
echo "cli: $name: ok"
