#!/usr/bin/env bash
# ioplexd given a service address whose host is a name for both loopbacks (::1 and
# 127.0.0.1, from an /etc/hosts of our own bind-mounted in a private mount
# namespace): it prints a "listening on" line per address, on one port, and echo
# answers on both, with workers before and after a SIGHUP restart (the stats count
# every connection) and in one process; "*" stays one listener; a second address
# that cannot be bound fails the start (exit 2) naming that address, with no
# "listening on" line, also for port 0 when the port the first address picked is
# taken on the second and no other is free, while with another free port the name
# starts over on it (in a network namespace of its own; that part is left out
# where one cannot be made). Skipped (77) where a mount namespace cannot be made.
# usage: ioplexd-names.sh IOPLEXD IOP-CLIENT BACKEND
set -uo pipefail
skip() { echo "ioplexd-names: skipped: $*"; exit 77; }
. "$(dirname "$0")/dual-stack-name.sh"
dual_stack_enter "$0" "$@"

ioplexd=$1 client=$2 backend=$3 dir=$DUAL_STACK_DIR name=$DUAL_STACK_NAME
if [ "${IOPLEXD_NAMES_STAGE:-}" != port0 ]; then
    dual_stack_mount
fi

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

# ioplexd with "echo=$1" must not start, with --workers 0 nor 2: exit 2, no
# "listening on" line, and its output matches every further argument.
refused_start() {
    local spec=$1 workers st pat
    shift
    for workers in 0 2; do
        timeout 10 "$ioplexd" --backend "$backend" --workers "$workers" --service "echo=$spec" \
            >"$dir/out" 2>&1
        st=$?
        [ "$st" -eq 2 ] || fail "echo=$spec, --workers $workers: exit $st, want 2"
        for pat in "$@"; do
            grep -q "$pat" "$dir/out" || fail "echo=$spec, --workers $workers: no '$pat' in the output"
        done
        ! grep -q "listening on" "$dir/out" || fail "echo=$spec, --workers $workers: said it listens"
    done
}

# Port 0 where the second address cannot have the port the first one picked: in a
# network namespace whose only ephemeral port is 47000, with 127.0.0.1:47000 taken.
if [ "${IOPLEXD_NAMES_STAGE:-}" = port0 ]; then
    ip link set lo up && echo "47000 47000" >/proc/sys/net/ipv4/ip_local_port_range ||
        skip "cannot set up the network namespace"
    start --workers 0 --service echo=127.0.0.1:47000
    busy=$pid
    pid=
    refused_start "$name:0" "$name:0 (127\.0\.0\.1:47000).*in use" "port 47000 was picked"
    kill -TERM "$busy"
    wait "$busy"
    # With other ports free, a pick taken on the second address is given up and
    # the name tries again until it has a port free on both. From 47001-47008 a
    # bind to port 0 with SO_REUSEADDR takes 47002 or 47004 at random (the lower
    # half of the range first, every other port left to connect), so with
    # 127.0.0.1:47002 taken half the first picks clash: four starts pass only by
    # trying again (32 tries: 2^-32 left to chance).
    start --workers 0 --service echo=127.0.0.1:47002
    busy=$pid
    pid=
    echo "47001 47008" >/proc/sys/net/ipv4/ip_local_port_range
    for workers in 0 2 0 2; do
        start --workers "$workers" --service "echo=$name:0"
        addresses
        [ "${addrs[1]}" = "127.0.0.1:47004" ] || fail "--workers $workers: want port 47004, got ${addrs[*]}"
        stop
    done
    kill -TERM "$busy"
    wait "$busy"
    busy=
    exit 0
fi

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

# A wildcard is no name: one listener, on any IPv4 address, in both modes.
for workers in 0 2; do
    start --workers "$workers" --service 'echo=*:0'
    lines=$(grep -c "listening on" "$dir/out")
    grep -q "^ioplexd: echo listening on 0\.0\.0\.0:[0-9]*$" "$dir/out" && [ "$lines" -eq 1 ] ||
        fail "echo=*:0, --workers $workers: want one listening line, on 0.0.0.0"
    stop
done

# The second address taken by somebody else: no start, the address named.
start --workers 0 --service echo=127.0.0.1:0
port=$(sed -n 's/^ioplexd: echo listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$dir/out")
busy=$pid
pid=
refused_start "$name:$port" "$name:$port (127\.0\.0\.1:$port).*in use"
kill -TERM "$busy"
wait "$busy"
busy=

if command -v ip >/dev/null && unshare -n true 2>/dev/null; then
    IOPLEXD_NAMES_STAGE=port0 unshare -n "$0" "$@"
    st=$?
    [ "$st" -eq 77 ] && echo "ioplexd-names: port 0 conflict part skipped: no network namespace"
    [ "$st" -eq 0 ] || [ "$st" -eq 77 ] || exit "$st"
else
    echo "ioplexd-names: port 0 conflict part skipped: no network namespace"
fi
echo "ioplexd-names: ok ($backend)"
