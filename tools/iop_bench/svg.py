"""Charts as plain SVG text, written by hand (no plotting library): a panel of bars
per workload, one bar per server with its min–max whisker, and a line chart of
throughput against idle connections."""

import math
from xml.sax.saxutils import escape, quoteattr

from . import catalog
from .report import fmt_num, fmt_us

FONT = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\""


class Svg:
    def __init__(self):
        self.parts = []

    def add(self, s):
        self.parts.append(s)

    def rect(self, x, y, w, h, fill, title=None, **attrs):
        extra = "".join(f" {k.replace('_', '-')}={quoteattr(str(v))}" for k, v in attrs.items())
        body = f"<title>{escape(title)}</title>" if title else ""
        self.add(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{max(h, 0):.1f}" '
                 f'fill="{fill}"{extra}>{body}</rect>' if body else
                 f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{max(h, 0):.1f}" fill="{fill}"{extra}/>')

    def line(self, x1, y1, x2, y2, stroke="#444", width=1, dash=None):
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}" '
                 f'stroke-width="{width}"{d}/>')

    def text(self, x, y, s, size=11, anchor="start", weight="normal", fill="#222", rotate=None):
        r = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate else ""
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
                 f'font-weight="{weight}" fill="{fill}"{r}>{escape(str(s))}</text>')

    def polyline(self, pts, stroke, width=2, title=None, **attrs):
        extra = "".join(f" {k.replace('_', '-')}={quoteattr(str(v))}" for k, v in attrs.items())
        p = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        body = f"<title>{escape(title)}</title>" if title else ""
        self.add(f'<polyline points="{p}" fill="none" stroke="{stroke}" stroke-width="{width}"{extra}>'
                 f'{body}</polyline>')

    def circle(self, x, y, r, fill, title=None):
        body = f"<title>{escape(title)}</title>" if title else ""
        self.add(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{fill}">{body}</circle>')

    def render(self, width, height):
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
                f'viewBox="0 0 {width:.0f} {height:.0f}" {FONT}>\n'
                f'<rect x="0" y="0" width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>\n'
                + "\n".join(self.parts) + "\n</svg>\n")


def nice_scale(vmax, ticks=4):
    """(top, step): the smallest round step (1, 2, 2.5 or 5 x 10^k) that covers
    vmax in at most ticks + 1 steps."""
    if not vmax or vmax <= 0:
        return 1.0, 0.25
    mag = 10 ** math.floor(math.log10(vmax / ticks))
    step = next(m * mag for m in (0.5, 1, 2, 2.5, 5, 10, 20) if math.ceil(vmax / (m * mag) - 1e-9) <= ticks + 1)
    return math.ceil(vmax / step - 1e-9) * step, step


def colour(name):
    return catalog.COLOURS.get(name, "#777777")


PANEL_H = 230
SLOT = 40          # px per bar
LEFT = 52          # y labels
TOP = 34           # panel title
BOTTOM = 58        # rotated server names
MIN_PANEL_W = 230  # room for the panel's title


def panel_width(nbars):
    return max(LEFT + SLOT * max(nbars, 2) + 16, MIN_PANEL_W)


def bar_panel(svg, x0, y0, cells, workload, key, unit, fmt, title=None):
    """One workload's panel: a bar per cell (server), whiskers min–max, the median
    on top; cells without numbers say why in one word. Returns the panel width."""
    cs = [c for c in cells if c.workload is workload]
    width = panel_width(len(cs))
    plot_h = PANEL_H - TOP - BOTTOM
    vals = [c.spread(key)[1] for c in cs if c.outcome()[0] == "ok" and c.spread(key)[1] is not None]
    top, step = nice_scale(max(vals) * 1.12 if vals else 0)   # room for the labels
    svg.text(x0 + width / 2, y0 + 16, title or workload.title, size=12, anchor="middle", weight="bold")
    svg.text(x0 + width / 2, y0 + 28, unit, size=9, anchor="middle", fill="#666")
    base = y0 + TOP + plot_h
    v = 0.0
    while v <= top + 1e-9:
        y = base - plot_h * v / top
        svg.line(x0 + LEFT - 4, y, x0 + width - 8, y, stroke="#e4e4e4")
        svg.text(x0 + LEFT - 7, y + 3, fmt(v) if v else "0", size=9, anchor="end", fill="#555")
        v += step
    svg.line(x0 + LEFT, base, x0 + width - 8, base, stroke="#888")
    for i, c in enumerate(cs):
        cx = x0 + LEFT + SLOT * i + SLOT / 2
        name = c.server.name
        svg.text(cx + 3, base + 12, name, size=9, anchor="end", rotate=-40)
        status, why = c.outcome()
        med = c.median(key) if status == "ok" else None
        if med is None:
            svg.text(cx, base - 4, {"ok": "-", "n/a": "n/a", "skipped": "n/r", "failed": "fail"}[status],
                     size=9, anchor="middle", fill="#999")
            continue
        lo, hi = c.spread(key)
        h = plot_h * med / top
        svg.rect(cx - SLOT * 0.35, base - h, SLOT * 0.7, h, colour(name),
                 title=f"{name}, {workload.title}: {fmt(med)} {unit} (min {fmt(lo)}, max {fmt(hi)}; "
                       f"{len(c.ok_runs)} runs)",
                 data_cell=f"{name}/{workload.name}", data_value=f"{med:g}")
        if hi > lo:
            ylo, yhi = base - plot_h * lo / top, base - plot_h * hi / top
            svg.line(cx, ylo, cx, yhi, stroke="#222")
            svg.line(cx - 4, yhi, cx + 4, yhi, stroke="#222")
            svg.line(cx - 4, ylo, cx + 4, ylo, stroke="#222")
        svg.text(cx, base - max(h, plot_h * hi / top) - 4, fmt(med), size=8 if SLOT < 36 else 9,
                 anchor="middle")
    return width


def line_chart(svg, x0, y0, cells, servers, steps, title, key="req_per_s", unit="req/s", fmt=fmt_num):
    """A figure (y: throughput by default) against idle connections (x, the steps
    evenly spaced): one line per server; a missing point breaks it. Returns
    (width, height)."""
    width, height = 560, 300
    left, top_, right, bottom = 60, 34, 150, 44
    pw, ph = width - left - right, height - top_ - bottom
    index = {(c.server.name, c.workload.name): c for c in cells}
    vals = [index[(s, w.name)].median(key) for s in servers for w in steps
            if (s, w.name) in index and index[(s, w.name)].outcome()[0] == "ok"]
    top, step = nice_scale(max(v for v in vals if v is not None) * 1.05 if any(vals) else 0)
    svg.text(x0 + width / 2 - right / 2, y0 + 16, title, size=12, anchor="middle", weight="bold")
    base = y0 + top_ + ph
    v = 0.0
    while v <= top + 1e-9:
        y = base - ph * v / top
        svg.line(x0 + left, y, x0 + left + pw, y, stroke="#e4e4e4")
        svg.text(x0 + left - 7, y + 3, fmt(v) if v else "0", size=9, anchor="end", fill="#555")
        v += step
    svg.text(x0 + 14, y0 + top_ + ph / 2, unit, size=9, anchor="middle", rotate=-90, fill="#555")
    xs = [x0 + left + (pw * i / (len(steps) - 1) if len(steps) > 1 else pw / 2) for i in range(len(steps))]
    for x, w in zip(xs, steps):
        svg.line(x, base, x, base + 4, stroke="#888")
        svg.text(x, base + 16, f"+{w.idle:,} idle" if w.idle else "no idle", size=9, anchor="middle")
    svg.line(x0 + left, base, x0 + left + pw, base, stroke="#888")
    svg.text(x0 + left + pw / 2, base + 34, f"{steps[0].conns} active connections plus idle ones",
             size=9, anchor="middle", fill="#555")
    ly = y0 + top_
    for s in servers:
        if not any((s, w.name) in index for w in steps):
            continue
        seg, segs, points = [], [], []
        for x, w in zip(xs, steps):
            c = index.get((s, w.name))
            med = c.median(key) if c and c.outcome()[0] == "ok" else None
            if med is None:
                segs.append(seg)
                seg = []
                continue
            y = base - ph * med / top
            seg.append((x, y))
            points.append((x, y, med, w))
        segs.append(seg)
        for sg in segs:
            if len(sg) > 1:
                svg.polyline(sg, colour(s), data_series=s)
        for x, y, med, w in points:
            svg.circle(x, y, 3.5, colour(s), title=f"{s}, +{w.idle:,} idle: {fmt(med)} {unit}")
        # the legend, with what the server could not do
        missing = [w for w in steps if (s, w.name) in index and index[(s, w.name)].outcome()[0] != "ok"]
        svg.rect(x0 + left + pw + 14, ly - 8, 12, 10, colour(s))
        svg.text(x0 + left + pw + 30, ly, s + (f" (no +{missing[0].idle:,})" if missing and missing[0].idle
                                               else ""), size=10)
        ly += 16
    return width, height


def _heading(svg, title, sub):
    svg.text(10, 22, title, size=15, weight="bold")
    svg.text(10, 40, sub, size=10, fill="#555")
    return 50


def _text_width(s, size):
    return len(s) * size * 0.6 + 20      # a generous guess: no font metrics here


def _grid(svg, y, cells, workloads, key, unit, fmt, max_width=900):
    """Panels left to right, wrapping at max_width. Returns (width, new y)."""
    x, width = 10, 0
    for w in workloads:
        cs = [c for c in cells if c.workload is w]
        if not cs:
            continue
        pw = panel_width(len(cs))
        if x > 10 and x + pw > max_width:
            x, y = 10, y + PANEL_H + 10
        bar_panel(svg, x, y, cells, w, key, unit if not w.churn or key != "req_per_s" else "conn/s", fmt)
        x += pw + 10
        width = max(width, x)
    return width, y + PANEL_H + 10


def _section(svg, y, text):
    svg.text(10, y + 16, text, size=13, weight="bold")
    return y + 24


def _cpu_us(v):
    return f"{v:.3g}"


def matrix_chart(cells, workloads, servers, sub):
    svg = Svg()
    y = _heading(svg, "iop-bench: every server under every workload", sub)
    mine = [c for c in cells if c.server.name in servers]
    y = _section(svg, y, "Throughput, median of rounds (whisker: min–max)")
    w1, y = _grid(svg, y, mine, workloads, "req_per_s", "req/s", fmt_num)
    y = _section(svg, y, "Requests per server CPU-second, median (higher: cheaper requests)")
    w2, y = _grid(svg, y, mine, workloads, "req_per_cpu_s", "requests / server CPU-s", fmt_num)
    width = max(w1, w2, _text_width(sub, 10))
    steps = [w for w in workloads if w.name == "echo-64"] + [w for w in workloads if w.idle]
    if len(steps) > 1:
        lw, lh = line_chart(svg, 10, y, mine, servers, steps, "Scaling: throughput as idle connections grow")
        width, y = max(width, lw + 20), y + lh + 10
    return svg.render(width, y)


def models_chart(cells, workloads, sub):
    svg = Svg()
    y = _heading(svg, "The five I/O models: the same echo load, one server per model", sub)
    servers = catalog.MODELS
    mine = [c for c in cells if c.server.name in servers]
    base = [w for w in workloads if w.name == "echo-64"]
    x = 10
    for key, title, unit, fmt in (("req_per_s", "Throughput", "req/s (whisker: min–max)", fmt_num),
                                  ("p99_us", "p99 latency", "µs", fmt_us),
                                  ("cpu_us_per_req", "Server CPU per request", "µs", _cpu_us)):
        for w in base:
            x += bar_panel(svg, x, y, mine, w, key, f"{w.title}: {unit}", fmt, title=title) + 10
    width, y = max(x, _text_width(sub, 10)), y + PANEL_H + 10
    steps = base + [w for w in workloads if w.idle]
    if len(steps) > 1:
        lw, lh = line_chart(svg, 10, y, mine, servers, steps, "Throughput as idle connections grow")
        lw2, _ = line_chart(svg, 10 + lw + 10, y, mine, servers, steps, "Server CPU per request",
                            key="cpu_us_per_req", unit="server CPU µs / request", fmt=_cpu_us)
        width, y = max(width, lw + lw2 + 30), y + lh + 10
    return svg.render(width, y)
