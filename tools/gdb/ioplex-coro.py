"""gdb commands for ioplex coroutines (load with: source tools/gdb/ioplex-coro.py).

  info coroutines [LOOP]   every live coroutine of the current thread's schedulers
                           (or of the scheduler of LOOP, an iop_loop_t * expression):
                           number, address, name, state
  coroutine bt N           backtrace of coroutine N from that list, as if it ran now

It walks the scheduler's list of live coroutines (struct iop__sched.all, linked
through all_next), which needs the library's debug info (RelWithDebInfo builds
have it). The backtrace works in a live process on x86_64 with the assembly
switch: it loads the registers saved by iop__ctx_switch (see ctx_x86_64.S),
prints the backtrace and puts the registers back. A running coroutine is shown
with plain `bt`.
"""
import gdb

STATES = ["new", "ready", "running", "parked", "switched", "done"]

# iop__ctx_switch's frame, from the saved sp (ctx_x86_64.S)
F_RBX, F_RBP, F_R12, F_R13, F_R14, F_R15, F_RIP, F_SIZE = 0x08, 0x10, 0x18, 0x20, 0x28, 0x30, 0x38, 0x40


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
        sp = int(c["ctx"]["sp"])
        if sp == 0:
            raise gdb.GdbError("coroutine %d has no saved context" % n)
        if gdb.selected_inferior().architecture().name() != "i386:x86-64":
            raise gdb.GdbError("coroutine bt knows the x86_64 switch frame only")
        u64 = gdb.lookup_type("unsigned long").pointer()

        def at(off):
            return int(gdb.Value(sp + off).cast(u64).dereference())

        regs = {"rbx": F_RBX, "rbp": F_RBP, "r12": F_R12, "r13": F_R13,
                "r14": F_R14, "r15": F_R15}
        gdb.execute("frame 0", to_string=True)
        saved = {r: int(gdb.parse_and_eval("$" + r)) for r in list(regs) + ["rsp", "rip"]}
        try:
            for r, off in regs.items():
                gdb.execute("set $%s = %d" % (r, at(off)))
            gdb.execute("set $rip = %d" % at(F_RIP))
            gdb.execute("set $rsp = %d" % (sp + F_SIZE))
            print("coroutine %d '%s' (%s):" % (n, c["name"].string(), _state(c)))
            gdb.execute("bt")
        finally:
            gdb.execute("frame 0", to_string=True)
            for r, v in saved.items():
                gdb.execute("set $%s = %d" % (r, v))


InfoCoroutines()
Coroutine()
CoroutineBt()
