"""What can be measured: the servers (ioplexd on each backend, the two model
servers, the peers) and the workloads, with what each server speaks and where it
cannot go."""

from dataclasses import dataclass, field

# select(2) cannot watch a descriptor >= FD_SETSIZE, whatever RLIMIT_NOFILE says.
FD_SETSIZE = 1024
# Descriptors a server or the load needs besides one per connection (listener,
# loop, eventfds, stdio, libraries), with a margin.
FD_MARGIN = 64


@dataclass(frozen=True)
class Workload:
    name: str            # on the command line and in the JSON
    title: str           # in tables and charts
    proto: str           # 'echo' or 'http': the service it needs
    size: int = 64       # echo message bytes
    churn: bool = False  # a new connection per request
    idle: int = 0        # idle connections held open besides the active ones
    conns: int = 100     # active connections, one request in flight each

    @property
    def unit(self):
        return "conn/s" if self.churn else "req/s"

    def fds(self):
        return self.conns + self.idle + FD_MARGIN


def make_workloads(idle_steps=(1000, 10000), conns=100):
    """The workloads in table order: echo ping-pong at 64 B and 4 KiB, HTTP /hello
    keep-alive, connection churn, then the idle-connection steps (the scaling
    series; its 0 point is echo-64)."""
    w = [
        Workload("echo-64", "echo 64 B", "echo", 64, conns=conns),
        Workload("echo-4k", "echo 4 KiB", "echo", 4096, conns=conns),
        Workload("http", "HTTP /hello", "http", conns=conns),
        Workload("churn", "churn (conn/s)", "echo", 64, churn=True, conns=conns),
    ]
    for n in idle_steps:
        w.append(Workload(f"idle-{n}", f"{conns} + {n:,} idle", "echo", 64, idle=n, conns=conns))
    return w


@dataclass(frozen=True)
class Server:
    name: str
    kind: str                 # 'ioplexd', 'model', 'peer' (echo binary), 'nginx'
    protos: frozenset
    summary: str              # what runs, for the tables
    model: str = ""           # the I/O model, for --models
    backend: str = ""         # ioplexd --backend
    program: str = ""         # binary, relative to the build dir
    flags: tuple = ()
    package: str = ""         # what to apt-get install when it is missing
    fd_limit: int = 0         # most descriptors it can watch (0: no limit of its own)
    target: str = ""          # CMake target that builds it
    scans_all: bool = False   # looks at every descriptor per wakeup (select, poll, busy-poll)
    extra_targets: tuple = field(default=())


ECHO = frozenset({"echo"})
ECHO_HTTP = frozenset({"echo", "http"})


def _ioplexd(backend, model, fd_limit=0):
    return Server(backend, "ioplexd", ECHO_HTTP, f"ioplexd --backend {backend}", model=model,
                  backend=backend, program="apps/ioplexd", fd_limit=fd_limit, target="ioplexd",
                  extra_targets=(f"iop_backend_{backend}",), scans_all=backend in ("select", "poll"))


SERVERS = [
    _ioplexd("select", "multiplexing", FD_SETSIZE),
    _ioplexd("poll", "multiplexing"),
    _ioplexd("epoll", "multiplexing"),
    _ioplexd("sigio", "signal-driven"),
    _ioplexd("uring", "async"),
    Server("blocking", "model", ECHO, "iop-model-blocking: a thread per connection", model="blocking",
           program="apps/models/iop-model-blocking", target="iop-model-blocking"),
    Server("busypoll", "model", ECHO, "iop-model-busypoll: one thread spinning over non-blocking sockets",
           model="non-blocking (busy-poll)", program="apps/models/iop-model-busypoll",
           target="iop-model-busypoll", scans_all=True),
    Server("ref", "peer", ECHO, "epoll-echo-ref: hand-written epoll, the yardstick",
           program="tools/bench/epoll-echo-ref", target="epoll-echo-ref"),
    Server("libevent", "peer", ECHO, "libevent-echo: libevent 2 events + read/write",
           program="tools/bench/libevent-echo", package="libevent-dev", target="libevent-echo"),
    Server("libevent-bev", "peer", ECHO, "libevent-echo --bufferevent",
           program="tools/bench/libevent-echo", flags=("--bufferevent",), package="libevent-dev",
           target="libevent-echo"),
    Server("libuv", "peer", ECHO, "libuv-echo: uv_read_start + uv_write",
           program="tools/bench/libuv-echo", package="libuv1-dev", target="libuv-echo"),
    Server("libuv-try", "peer", ECHO, "libuv-echo --try-write",
           program="tools/bench/libuv-echo", flags=("--try-write",), package="libuv1-dev",
           target="libuv-echo"),
    Server("nginx", "nginx", frozenset({"http"}), "nginx, 1 worker, return 200 on /hello",
           package="nginx-light"),
]
BY_NAME = {s.name: s for s in SERVERS}

BACKENDS = ["select", "poll", "epoll", "sigio", "uring"]
PEERS = ["nginx", "ref", "libevent", "libuv"]
# --models: one server per I/O model (three for multiplexing), in the order the
# models are usually taught.
MODELS = ["blocking", "busypoll", "sigio", "select", "poll", "epoll", "uring"]
MODEL_TITLES = {
    "blocking": "blocking",
    "busypoll": "non-blocking (busy-poll)",
    "sigio": "signal-driven",
    "select": "multiplexing",
    "poll": "multiplexing",
    "epoll": "multiplexing",
    "uring": "async",
}

# Colours for charts, one per server, stable from run to run.
COLOURS = {
    "select": "#9d9d9d", "poll": "#b07aa1", "epoll": "#4e79a7", "sigio": "#f28e2b",
    "uring": "#e15759", "blocking": "#76b7b2", "busypoll": "#edc948", "ref": "#59a14f",
    "libevent": "#9c755f", "libevent-bev": "#c9a88a", "libuv": "#ff9da7", "libuv-try": "#d37295",
    "nginx": "#499894",
}
