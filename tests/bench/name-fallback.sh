#!/usr/bin/env bash
# iop-echo-load given a name whose first address has no listener: it must go on
# to the next address, as the apps' clients do. The name resolves to ::1 first and
# 127.0.0.1 second (an /etc/hosts of our own, bind-mounted in a private mount
# namespace); only 127.0.0.1 listens. Skipped (77) where a mount namespace cannot
# be made (not root, no unshare).
# usage: name-fallback.sh IOP-ECHO-LOAD EPOLL-ECHO-REF
set -uo pipefail
load=$1 server=$2
skip() { echo "name-fallback: skipped: $*"; exit 77; }
fail() { echo "name-fallback: FAIL: $*"; exit 1; }
command -v unshare >/dev/null || skip "no unshare"
unshare -m --propagation private true 2>/dev/null || skip "cannot make a mount namespace here"

dir=$(mktemp -d)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
printf '::1 iop-dual-stack-name\n127.0.0.1 iop-dual-stack-name\n' >"$dir/hosts"

"$server" --listen 127.0.0.1:0 >"$dir/server.out" 2>&1 &
server_pid=$!
port=
for _ in $(seq 100); do       # up to 10 s for the line that names the port
    port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$dir/server.out")
    [ -n "$port" ] && break
    kill -0 "$server_pid" 2>/dev/null || fail "the server ended: $(cat "$dir/server.out")"
    sleep 0.1
done
[ -n "$port" ] || fail "the server printed no port: $(cat "$dir/server.out")"

out=$(unshare -m --propagation private sh -c '
    mount --bind "$1" /etc/hosts || exit 77
    first=$(getent ahosts iop-dual-stack-name | head -n 1 | cut -d " " -f 1)
    [ "$first" = "::1" ] || { echo "the name resolves to $first first"; exit 77; }
    exec "$2" --connections 3 --warmup 0 --duration 0.2 "iop-dual-stack-name:$3"' \
    sh "$dir/hosts" "$load" "$port" 2>&1)
status=$?
[ "$status" -eq 77 ] && skip "$out"
[ "$status" -eq 0 ] || fail "exit $status: $out"
grep -q "errors 0" <<<"$out" || fail "unexpected output: $out"
echo "name-fallback: ok: $out"
