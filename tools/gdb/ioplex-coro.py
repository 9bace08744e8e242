"""gdb commands for ioplex coroutines (load with: source tools/gdb/ioplex-coro.py).

  info coroutines [LOOP]   every live coroutine of the current thread's schedulers
                           (or of the scheduler of LOOP, an iop_loop_t * expression):
                           number, address, name, state
  coroutine bt N           backtrace of coroutine N from that list, as if it ran now

It walks the scheduler's list of live coroutines (struct iop__sched.all, linked
through all_next), which needs the library's debug info (RelWithDebInfo builds
have it). The backtrace works in a live process: it loads the registers the
coroutine will resume with — from iop__ctx_switch's frame with the assembly
switch on x86_64 and aarch64 (ctx_x86_64.S, ctx_aarch64.S), from its ucontext_t
with the fallback (ctx_ucontext.c) — prints the backtrace and puts the registers
back. A running coroutine is shown with plain `bt`. Tested by ctest tools.gdb.
"""
import gdb

STATES = ["new", "ready", "running", "parked", "switched", "done"]

# iop__ctx_switch's frame, from the saved sp (ctx_x86_64.S)
X86_64_FRAME = {"rbx": 0x08, "rbp": 0x10, "r12": 0x18, "r13": 0x20, "r14": 0x28, "r15": 0x30}
F_RIP, F_SIZE = 0x38, 0x40
# ctx_aarch64.S: x19..x30 in pairs from sp + 0; the frame is 0xb0 bytes
AARCH64_FRAME = {"x%d" % r: (r - 19) * 8 for r in range(19, 31)}
A64_F_SIZE = 0xb0


def _schedulers(arg):
    if arg:
        loop = gdb.parse_and_eval(arg)
        sched = loop.cast(gdb.lookup_type("struct iop_loop").pointer())["sched"]
        if int(sched) == 0:
            return []
        return [sched.cast(gdb.lookup_type("struct iop__sched").pointer())]
    try:
        s = gdb.parse_and_eval("iop__coro_tls")["scheds"]
    except gdb.error as e:
        raise gdb.GdbError("cannot read this thread's schedulers (%s); "
                           "pass a loop: info coroutines LOOP" % e)
    out = []
    while int(s) != 0:
        out.append(s)
        s = s["next_sched"]
    return out


def _coroutines(arg):
    found = []
    for sched in _schedulers(arg):
        c = sched["all"]
        while int(c) != 0:
            found.append(c)
            c = c["all_next"]
    return found


def _state(c):
    st = int(c["state"])
    name = STATES[st] if st < len(STATES) else str(st)
    if int(c["cancelled"]):
        name += ",cancelled"
    if st == 3 and int(c["wait_op"]) != 0:
        name += " on op"
    elif st == 3 and int(c["waiter"]) != 0:
        name += " in a wait queue"
    return name


class InfoCoroutines(gdb.Command):
    """info coroutines [LOOP]: list the live coroutines."""

    def __init__(self):
        super().__init__("info coroutines", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        try:
            current = int(gdb.parse_and_eval("iop__coro_tls")["current"])
        except gdb.error:
            current = 0
        cs = _coroutines(arg.strip())
        if not cs:
            print("no live coroutines")
        for i, c in enumerate(cs):
            mark = "*" if int(c) == current else " "
            print("%s%3d  0x%x  %-24s %s" % (mark, i, int(c), c["name"].string(), _state(c)))


class Coroutine(gdb.Command):
    """coroutine bt N [LOOP]: backtrace of a suspended coroutine."""

    def __init__(self):
        super().__init__("coroutine", gdb.COMMAND_STACK, prefix=True)


class CoroutineBt(gdb.Command):
    """coroutine bt N [LOOP]: backtrace of suspended coroutine N (see info coroutines)."""

    def __init__(self):
        super().__init__("coroutine bt", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        args = arg.split(None, 1)
        if not args:
            raise gdb.GdbError("usage: coroutine bt N [LOOP]")
        cs = _coroutines(args[1] if len(args) > 1 else "")
        n = int(args[0])
        if n < 0 or n >= len(cs):
            raise gdb.GdbError("no coroutine %d (see info coroutines)" % n)
        c = cs[n]
        st = int(c["state"])
        if st == 2:
            print("coroutine %d is running: use bt" % n)
            return
        arch = gdb.selected_inferior().architecture().name()
        regs = _saved_registers(c, arch)
        if regs is None:
            raise gdb.GdbError("coroutine %d has no saved context" % n)
        gdb.execute("frame 0", to_string=True)
        saved = {r: int(gdb.parse_and_eval("$" + r)) for r in regs}
        try:
            for r, v in regs.items():
                gdb.execute("set $%s = %d" % (r, v))
            print("coroutine %d '%s' (%s):" % (n, c["name"].string(), _state(c)))
            gdb.execute("bt")
        finally:
            gdb.execute("frame 0", to_string=True)
            for r, v in saved.items():
                gdb.execute("set $%s = %d" % (r, v))


def _word(addr):
    u64 = gdb.lookup_type("unsigned long").pointer()
    return int(gdb.Value(addr).cast(u64).dereference())


def _saved_registers(c, arch):
    """The registers a suspended coroutine resumes with, as {gdb name: value}."""
    sp = int(c["ctx"]["sp"])
    impl = int(c["ctx"]["impl"])
    if sp == 0 and impl != 0:
        return _ucontext_registers(impl, arch)
    if sp == 0:
        return None
    if arch == "i386:x86-64":
        regs = {r: _word(sp + off) for r, off in X86_64_FRAME.items()}
        regs["rip"] = _word(sp + F_RIP)
        regs["rsp"] = sp + F_SIZE
        return regs
    if arch.startswith("aarch64"):
        regs = {r: _word(sp + off) for r, off in AARCH64_FRAME.items()}
        regs["pc"] = regs["x30"]           # resumed with br x30
        regs["sp"] = sp + A64_F_SIZE
        return regs
    raise gdb.GdbError("coroutine bt knows the x86_64 and aarch64 switch frames, not %s" % arch)


def _ucontext_registers(impl, arch):
    """The ucontext_t fallback (IOPLEX_CORO_UCONTEXT): registers in uc_mcontext."""
    uc = gdb.Value(impl).cast(gdb.lookup_type("ucontext_t").pointer()).dereference()
    m = uc["uc_mcontext"]
    if arch == "i386:x86-64":
        g = m["gregs"]     # indices: REG_R12..REG_R15 = 4..7, RBP 10, RBX 11, RSP 15, RIP 16
        names = {"r12": 4, "r13": 5, "r14": 6, "r15": 7, "rbp": 10, "rbx": 11,
                 "rsp": 15, "rip": 16}
        return {r: int(g[i]) & 0xffffffffffffffff for r, i in names.items()}
    if arch.startswith("aarch64"):
        regs = {"x%d" % i: int(m["regs"][i]) for i in range(19, 31)}
        regs["sp"] = int(m["sp"])
        regs["pc"] = int(m["pc"])
        return regs
    raise gdb.GdbError("coroutine bt does not know ucontext_t on %s" % arch)


InfoCoroutines()
Coroutine()
CoroutineBt()
