#!/usr/bin/env bash
# ioplexd given a service address whose host is a name for both loopbacks (::1 and
# 127.0.0.1, from an /etc/hosts of our own bind-mounted in a private mount
# namespace): it prints a "listening on" line per address, on one port, and echo
# answers on both, with workers before and after a SIGHUP restart (the stats count
# every connection) and in one process; a second address that cannot be bound
# fails the start (exit 2) naming that address, with no "listening on" line.
# Skipped (77) where a mount namespace cannot be made.
# usage: ioplexd-names.sh IOPLEXD IOP-CLIENT BACKEND
set -uo pipefail
skip() { echo "ioplexd-names: skipped: $*"; exit 77; }
command -v unshare >/dev/null || skip "no unshare"
unshare -m --propagation private true 2>/dev/null || skip "cannot make a mount namespace here"
if [ "${IOPLEXD_NAMES_INSIDE:-}" != 1 ]; then
    dir=$(mktemp -d)
    trap 'rm -rf "$dir"' EXIT
    printf '::1 iop-dual-stack-name\n127.0.0.1 iop-dual-stack-name\n' >"$dir/hosts"
    IOPLEXD_NAMES_INSIDE=1 IOPLEXD_NAMES_HOSTS="$dir/hosts" IOPLEXD_NAMES_DIR="$dir" \
        unshare -m --propagation private "$0" "$@"
    exit $?
fi

ioplexd=$1 client=$2 backend=$3 dir=$IOPLEXD_NAMES_DIR name=iop-dual-stack-name
mount --bind "$IOPLEXD_NAMES_HOSTS" /etc/hosts || skip "cannot bind-mount /etc/hosts"
getent ahosts "$name" | grep -q '^::1 ' && getent ahosts "$name" | grep -q '^127\.0\.0\.1 ' ||
    skip "$name does not resolve to both loopbacks"

pid= busy=
fail() {
    echo "ioplexd-names: FAIL ($backend): $*"
    [ -f "$dir/out" ] && sed 's/^/    | /' "$dir/out"
    exit 1
}
cleanup() {
    for p in $pid $busy; do kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
}
trap cleanup EXIT

# Starts ioplexd with "$@"; waits for "serving" (workers 0) or every worker ready.
start() {
    "$ioplexd" --backend "$backend" "$@" >"$dir/out" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        grep -q "serving in this process\|worker 1: pid [0-9]* ready" "$dir/out" &&
            grep -q "worker 0: pid [0-9]* ready\|serving in this process" "$dir/out" && return
        kill -0 "$pid" 2>/dev/null || fail "ioplexd ended: exit $(wait "$pid"; echo $?)"
        sleep 0.1
    done
    fail "ioplexd did not start within 10 s"
}

# The addresses of the "echo listening on" lines: exactly [::1]:P and 127.0.0.1:P.
addresses() {
    mapfile -t addrs < <(sed -n 's/^ioplexd: echo listening on \(.*\)$/\1/p' "$dir/out")
    [ "${#addrs[@]}" -eq 2 ] || fail "want 2 listening lines, got ${#addrs[@]}"
    local p6=${addrs[0]#\[::1\]:} p4=${addrs[1]#127.0.0.1:}
    [ "${addrs[0]}" = "[::1]:$p6" ] && [ "${addrs[1]}" = "127.0.0.1:$p4" ] && [ "$p6" = "$p4" ] ||
        fail "want [::1]:P then 127.0.0.1:P, got ${addrs[*]}"
}

echo_both() {
    for a in "${addrs[@]}"; do
        got=$(echo "hello $a" | timeout 10 "$client" echo "$a" --backend "$backend") ||
            fail "echo on $a failed: $got"
        [ "$got" = "hello $a" ] || fail "echo on $a answered '$got'"
    done
}

stop() {
    kill -TERM "$pid"
    wait "$pid"
    local st=$?
    pid=
    [ "$st" -eq 0 ] || fail "exit $st after SIGTERM"
}

# Workers: both addresses, then a rolling restart, then both again.
start --workers 2 --stats-interval 0.1 --service "echo=$name:0"
addresses
echo_both
kill -HUP "$pid"
for _ in $(seq 100); do
    [ "$(grep -c "worker [01]: pid [0-9]* ready" "$dir/out")" -ge 4 ] && break
    sleep 0.1
done
[ "$(grep -c "worker [01]: pid [0-9]* ready" "$dir/out")" -ge 4 ] || fail "the workers were not replaced"
echo_both
for _ in $(seq 50); do        # a stats line after the last connection closed
    grep -q "stats: 4 connections, 0 open" "$dir/out" && break
    sleep 0.1
done
grep -q "stats: 4 connections, 0 open" "$dir/out" || fail "no stats line saying 4 connections, 0 open"
stop
sum=$(sed -n 's/.*connections per worker: 0: \([0-9]*\), 1: \([0-9]*\)$/\1+\2/p' "$dir/out")
[ -n "$sum" ] && [ $((sum)) -eq 4 ] || fail "connections per worker do not add up to 4: '$sum'"

# One process.
start --workers 0 --service "echo=$name:0"
addresses
echo_both
stop

# The second address taken by somebody else: no start, the address named.
start --workers 0 --service echo=127.0.0.1:0
port=$(sed -n 's/^ioplexd: echo listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$dir/out")
busy=$pid
pid=
for workers in 0 2; do
    "$ioplexd" --backend "$backend" --workers "$workers" --service "echo=$name:$port" >"$dir/out" 2>&1
    st=$?
    [ "$st" -eq 2 ] || fail "--workers $workers with 127.0.0.1:$port taken: exit $st, want 2"
    grep -q "$name:$port (127\.0\.0\.1:$port).*in use" "$dir/out" ||
        fail "--workers $workers: the failure does not name 127.0.0.1:$port"
    ! grep -q "listening on" "$dir/out" || fail "--workers $workers: said it listens"
done
kill -TERM "$busy"
wait "$busy"
busy=
echo "ioplexd-names: ok ($backend)"
