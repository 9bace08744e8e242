#!/usr/bin/env bash
# apps.loop_out_of_fds: every app that runs a loop, started with room for one fd
# past stdio. The epoll loop's second fd then fails with EMFILE: a run-time failure,
# status 1 with the reason, not the usage error's 2, which stays for a backend that
# cannot run here.
# usage: loop-out-of-fds.sh IOP-FETCH IOP-ECHO-CLIENT IOP-ECHO-SERVER IOP-ECHO-PROACTOR
#                           IOPLEXD IOP-PINGPONG IOP-POOL-DEMO
set -uo pipefail
fetch=$1 echo_client=$2 echo_server=$3 proactor=$4 ioplexd=$5 pingpong=$6 pool_demo=$7
# The limit counts from stdio: close what ctest (or anything else) left open.
for fd in /proc/$$/fd/*; do
    n=${fd##*/}
    [ "$n" -gt 2 ] && eval "exec $n>&-"
done
failed=0
check() {   # check STATUS ARGS...: the app run with ARGS exits STATUS
    local want=$1 err
    shift
    err=$("$@" </dev/null 2>&1 >/dev/null)
    local st=$?
    if [ "$st" -ne "$want" ]; then
        echo "FAIL: status $st, not $want: $*: $err"
        failed=1
    fi
}
for app in "$fetch http://127.0.0.1:1/" "$echo_client 127.0.0.1:1" \
           "$echo_server --listen 127.0.0.1:0" "$proactor --listen 127.0.0.1:0" \
           "$ioplexd --service echo=127.0.0.1:0" "$ioplexd --workers 2 --service echo=127.0.0.1:0" \
           "$pingpong" "$pool_demo"; do
    # shellcheck disable=SC2086  # the words of $app are the command and its arguments
    check 1 prlimit --nofile=4 $app --backend epoll
    # shellcheck disable=SC2086
    check 2 $app --backend no-such-backend
done
[ "$failed" -eq 0 ] && echo "loop-out-of-fds: ok"
exit "$failed"
