# Sourced by the tests that need a host name for both loopbacks: iop-dual-stack-name,
# ::1 then 127.0.0.1, from an /etc/hosts of our own bind-mounted in a private mount
# namespace. The sourcing script defines skip() (exit 77 with a reason).
DUAL_STACK_NAME=iop-dual-stack-name

# dual_stack_enter "$0" "$@": outside, writes the hosts file into a temporary
# directory (removed when the outer script exits) and runs the script again inside
# a private mount namespace, exiting with its status. Inside it returns, with
# DUAL_STACK_DIR the temporary directory.
dual_stack_enter() {
    command -v unshare >/dev/null || skip "no unshare"
    unshare -m --propagation private true 2>/dev/null || skip "cannot make a mount namespace here"
    [ "${DUAL_STACK_INSIDE:-}" = 1 ] && return 0
    local dir
    dir=$(mktemp -d)
    trap "rm -rf '$dir'" EXIT
    printf '::1 %s\n127.0.0.1 %s\n' "$DUAL_STACK_NAME" "$DUAL_STACK_NAME" >"$dir/hosts"
    DUAL_STACK_INSIDE=1 DUAL_STACK_DIR="$dir" unshare -m --propagation private "$@"
    exit $?
}

# dual_stack_mount: inside, puts the hosts file over /etc/hosts and checks the name
# resolves to ::1, then 127.0.0.1 (skips otherwise).
dual_stack_mount() {
    mount --bind "$DUAL_STACK_DIR/hosts" /etc/hosts || skip "cannot bind-mount /etc/hosts"
    local order
    order=$(getent ahosts "$DUAL_STACK_NAME" | awk '$2 == "STREAM" { print $1 }' | tr '\n' ' ')
    [ "$order" = "::1 127.0.0.1 " ] || skip "$DUAL_STACK_NAME does not resolve to ::1, then 127.0.0.1"
}
