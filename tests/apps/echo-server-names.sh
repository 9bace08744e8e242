#!/usr/bin/env bash
# iop-echo-server or iop-echo-proactor given a listen address whose host is a name
# for both loopbacks (::1 and 127.0.0.1, from an /etc/hosts of our own bind-mounted
# in a private mount namespace), in one process and (iop-echo-server) with
# --workers 2: it prints a "listening on" line
# per address, on one port, and echoes on both (an acceptor per listener, not on
# listener 0 only); the connections counted (per worker with workers, --stats in one
# process) add up to every connection. Skipped (77) where a mount namespace cannot
# be made.
# usage: echo-server-names.sh IOP-ECHO-SERVER|IOP-ECHO-PROACTOR IOP-CLIENT BACKEND
set -uo pipefail
skip() { echo "echo-server-names: skipped: $*"; exit 77; }
. "$(dirname "$0")/dual-stack-name.sh"
dual_stack_enter "$0" "$@"

server=$1 client=$2 backend=$3 dir=$DUAL_STACK_DIR name=$DUAL_STACK_NAME
prog=$(basename "$server")
dual_stack_mount

pid=
fail() {
    echo "echo-server-names: FAIL ($prog, $backend): $*"
    [ -f "$dir/out" ] && sed 's/^/    | /' "$dir/out"
    exit 1
}
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; wait 2>/dev/null' EXIT

# run_mode WORKERS: one server run (0: one process), 8 echoes over the name's two
# addresses, SIGTERM, and the connections it counted.
run_mode() {
    local workers=$1 mode="one process" st line total
    local -a extra=(--stats)
    [ "$workers" -gt 0 ] && extra=(--workers "$workers") mode="$workers workers"
    "$server" --backend "$backend" --listen "$name:0" "${extra[@]}" >"$dir/out" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        [ "$(grep -c ': listening on ' "$dir/out")" -ge 2 ] && break
        kill -0 "$pid" 2>/dev/null || fail "$mode: the server ended: exit $(wait "$pid"; echo $?)"
        sleep 0.1
    done
    mapfile -t addrs < <(sed -n 's/^'"$prog"': listening on \([^,]*\),.*$/\1/p' "$dir/out")
    [ "${#addrs[@]}" -eq 2 ] || fail "$mode: want 2 listening lines, got ${#addrs[@]}"
    local p6=${addrs[0]#\[::1\]:} p4=${addrs[1]#127.0.0.1:}
    [ "${addrs[0]}" = "[::1]:$p6" ] && [ "${addrs[1]}" = "127.0.0.1:$p4" ] && [ "$p6" = "$p4" ] ||
        fail "$mode: want [::1]:P then 127.0.0.1:P, got ${addrs[*]}"

    # Four connections on each address: with workers, SO_REUSEPORT spreads them.
    for a in "${addrs[@]}"; do
        for i in 1 2 3 4; do
            got=$(echo "hello $a $i" | timeout 10 "$client" echo "$a" --backend "$backend") ||
                fail "$mode: echo $i on $a failed: $got"
            [ "$got" = "hello $a $i" ] || fail "$mode: echo $i on $a answered '$got'"
        done
    done

    kill -TERM "$pid"
    wait "$pid"
    st=$?
    pid=
    [ "$st" -eq 0 ] || fail "$mode: exit $st after SIGTERM"
    if [ "$workers" -gt 0 ]; then
        line=$(grep 'connections per worker:' "$dir/out") || fail "$mode: no per-worker counts"
        total=$(sed 's/.*connections per worker://' <<<"$line" | tr ',' '\n' | awk -F': ' '{ s += $2 } END { print s + 0 }')
    else
        line=$(grep ': stats: ' "$dir/out") || fail "$mode: no stats line"
        total=$(sed -n 's/.* reads echoed, \([0-9]*\) connections,.*/\1/p' <<<"$line")
    fi
    [ "${total:-0}" -eq 8 ] || fail "$mode: $total connections counted, not 8: $line"
    echo "echo-server-names: ok ($prog, $backend, $mode): ${addrs[*]}"
}

run_mode 0
[ "$prog" = iop-echo-server ] && run_mode 2   # the proactor has no workers
exit 0
