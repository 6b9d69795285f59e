"""Pipeline-parallel schedules (§3.2.1): 1F1B, zero-bubble ZB1P and DualPipe, simulated op by op.

A model of L layers is cut into PP stages; stage s lives on device s (DualPipe: device r holds stage r of
the forward-direction copy and stage PP−1−r of the reverse-direction copy). A batch is cut into m
micro-batches. Every micro-batch passes each stage through these ops:

    F   forward of one stage (time F)
    B   full backward (input gradient and weight gradient together; time B)
    BI  backward for the input only (time B − W): what the previous stage is waiting for
    W   backward for the weights only (time W): needed by nobody but the optimizer step
    F&B one forward chunk and one backward chunk (full, of another micro-batch) run overlapped on one
        device; time F&B (DualPipe's unit: F&B < F + B when their communication and computation overlap)

A *schedule* is, per device, the order of its ops. :func:`simulate` runs that order as early as the
dependencies allow (no communication time — the report's table assumes it hidden):

    F(s, m) waits for F(s−1, m);   B/BI(s, m) waits for B/BI(s+1, m), or for F(s, m) on the last stage;
    W(s, m) waits for BI(s, m);    a device runs one op at a time, in its order.

**Bubble** (the report's Table 2): the idle time of a device during one training step (one pipeline
flush), makespan − busy time, where the makespan runs from the first op's start to the last op's end over
all devices. The simulated bubble of every device is compared to the report's formulas

    1F1B       (PP − 1)(F + B)                      params 1×   activations PP   micro-batches in flight
    ZB1P       (PP − 1)(F + B − 2W)                 params 1×   activations PP
    DualPipe   (PP/2 − 1)(F&B + B − 3W)             params 2×   activations PP + 1

"Activations" counts, at its worst moment, how many (stage, micro-batch) activations a device keeps: one
is taken at the start of F and given back at the end of the op that finishes its backward (B, or W when
the backward is split).

The orders: 1F1B as Megatron-LM runs it (PP − 1 − s warm-up forwards, then one forward, one backward);
ZB1P as the zero-bubble paper's handcrafted ZB-H1 (stage s runs the triple F_x, BI_{x−(PP−1−s)},
W_{x−(PP−1)}); DualPipe translated step by step from the eight loops of ``DualPipe.step`` in
deepseek-ai/DualPipe (dualpipe/dualpipe.py), micro-batches fed from both ends.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

__all__ = ["Op", "Timed", "Timeline", "PassTimes", "SCHEDULES", "schedule_1f1b", "schedule_zb1p",
           "schedule_dualpipe", "make_schedule", "simulate", "simulate_tasks", "Task", "run_schedule", "bubble_formula", "table_row",
           "min_microbatches", "gantt", "REPORT_TABLE", "formula_exact", "overlap_tasks", "pair_time",
           "steady_layer_time", "hiding_threshold", "gantt_streams", "OVERLAP_COMPUTE", "OVERLAP_COMM",
           "pass_flops", "overlap_compute_flops", "flops_to_times"]

SCHEDULES = ("1F1B", "ZB1P", "DualPipe")

#: The report's Table 2 as text: bubble, parameters per device, activations per device.
REPORT_TABLE = {"1F1B": ("(PP−1)(F+B)", "1×", "PP"),
                "ZB1P": ("(PP−1)(F+B−2W)", "1×", "PP"),
                "DualPipe": ("(PP/2−1)(F&B+B−3W)", "2×", "PP+1")}


@dataclass(frozen=True)
class Op:
    """One op of a schedule. ``kind`` in F, B, BI, W, F&B; for F&B, (mb, direction) is the forward's
    micro-batch and (mb2, direction2) the backward's. ``direction`` 0 enters at device 0, 1 at device PP−1."""
    kind: str
    mb: int
    direction: int = 0
    mb2: int = -1
    direction2: int = -1

    def __post_init__(self):
        if self.kind not in ("F", "B", "BI", "W", "F&B"):
            raise ValueError(f"Op kind must be F, B, BI, W or F&B, got {self.kind!r}")

    def parts(self) -> list[tuple[str, int, int]]:
        """(pass, direction, micro-batch) of what the op computes: pass F, B (input gradient) or W."""
        if self.kind == "F":
            return [("F", self.direction, self.mb)]
        if self.kind == "B":
            return [("B", self.direction, self.mb), ("W", self.direction, self.mb)]
        if self.kind == "BI":
            return [("B", self.direction, self.mb)]
        if self.kind == "W":
            return [("W", self.direction, self.mb)]
        return [("F", self.direction, self.mb), ("B", self.direction2, self.mb2), ("W", self.direction2, self.mb2)]

    @property
    def label(self) -> str:
        arrow = "'" if self.direction == 1 else ""
        if self.kind == "F&B":
            return f"{self.mb}{arrow}|{self.mb2}{chr(39) if self.direction2 == 1 else ''}"
        return f"{self.mb}{arrow}"


@dataclass(frozen=True)
class PassTimes:
    """Execution times of one stage's passes for one micro-batch (any unit).

    F forward, B full backward (input + weight gradient), W the weight-gradient part of B (so the
    input-gradient part takes B − W), FB an overlapped forward + backward pair (default F + B: no overlap).
    """
    F: float = 1.0
    B: float = 2.0
    W: float = 1.0
    FB: float | None = None

    def __post_init__(self):
        for name in ("F", "B", "W"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v != v or v < 0:
                raise ValueError(f"PassTimes: {name} must be a number ≥ 0, got {v!r}")
        if self.W > self.B:
            raise ValueError(f"PassTimes: W = {self.W} is part of the full backward B = {self.B}, so W ≤ B; "
                             "lower W or raise B")
        if self.FB is not None and (not isinstance(self.FB, (int, float)) or self.FB != self.FB or self.FB < 0):
            raise ValueError(f"PassTimes: FB must be a number ≥ 0 or None (= F + B), got {self.FB!r}")

    @property
    def fb(self) -> float:
        return self.F + self.B if self.FB is None else self.FB

    def duration(self, kind: str) -> float:
        return {"F": self.F, "B": self.B, "BI": self.B - self.W, "W": self.W, "F&B": self.fb}[kind]


@dataclass(frozen=True)
class Timed:
    """An op placed in time on a device."""
    device: int
    op: Op
    start: float
    end: float


@dataclass
class Timeline:
    """The result of :func:`simulate`: every op with its start and end, per device in execution order."""
    pp: int
    ops: list[Timed] = field(default_factory=list)
    schedule: str = ""

    def on(self, device: int) -> list[Timed]:
        return [t for t in self.ops if t.device == device]

    @property
    def makespan(self) -> float:
        return max(t.end for t in self.ops) - min(t.start for t in self.ops)

    def busy(self, device: int) -> float:
        return sum(t.end - t.start for t in self.on(device))

    def idle(self, device: int) -> float:
        """Bubble of one device: makespan − its busy time."""
        return self.makespan - self.busy(device)

    def bubbles(self) -> list[float]:
        return [self.idle(d) for d in range(self.pp)]

    @property
    def bubble(self) -> float:
        """The largest per-device bubble (equal on all devices for the three schedules, see the tests)."""
        return max(self.bubbles())

    def in_flight(self, device: int) -> int:
        """Peak number of (direction, micro-batch) activations the device holds at once: taken at the start
        of the op that runs F, released at the end of the op that completes the backward (B, F&B or W)."""
        events = []
        for t in self.on(device):
            for p, d, m in t.op.parts():
                if p == "F":
                    events.append((t.start, 1))
                elif p == "W":
                    events.append((t.end, -1))
        events.sort(key=lambda e: (e[0], e[1]))          # releases before takes at equal times
        peak = cur = 0
        for _, delta in events:
            cur += delta
            peak = max(peak, cur)
        return peak

    def peak_in_flight(self) -> int:
        return max(self.in_flight(d) for d in range(self.pp))


# ---- the three orders -------------------------------------------------------------------------------------

def _check(pp: int, m: int, schedule: str) -> None:
    if not isinstance(pp, int) or isinstance(pp, bool) or pp < 1:
        raise ValueError(f"PP (pipeline stages) must be an int ≥ 1, got {pp!r}")
    if schedule == "DualPipe" and (pp < 2 or pp % 2):
        raise ValueError(f"DualPipe needs an even PP ≥ 2 (each device holds stage r and stage PP−1−r), got PP = {pp}; "
                         "use an even number of stages")
    need = min_microbatches(schedule, pp)
    if not isinstance(m, int) or isinstance(m, bool) or m < need or (schedule == "DualPipe" and m % 2):
        what = "an even number ≥ 2·PP (half enter from each end)" if schedule == "DualPipe" else "≥ PP"
        raise ValueError(f"{schedule} with PP = {pp} needs micro-batches {what}, i.e. ≥ {need}, got {m!r}: "
                         "with fewer the pipeline never reaches its steady state and the formula does not apply")


def min_microbatches(schedule: str, pp: int) -> int:
    """Fewest micro-batches for which the schedule reaches its steady state: PP (1F1B, ZB1P), 2·PP (DualPipe:
    PP per direction, as ``DualPipe.step`` asserts)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    return 2 * pp if schedule == "DualPipe" else pp


def schedule_1f1b(pp: int, m: int) -> list[list[Op]]:
    """1F1B (PipeDream-flush, Megatron-LM): stage s runs PP−1−s warm-up forwards, then alternates one forward
    and one full backward, then drains the remaining backwards."""
    _check(pp, m, "1F1B")
    orders = []
    for s in range(pp):
        warm = min(pp - 1 - s, m)
        ops = [Op("F", i) for i in range(warm)]
        for j in range(m - warm):
            ops += [Op("F", warm + j), Op("B", j)]
        ops += [Op("B", j) for j in range(m - warm, m)]
        orders.append(ops)
    return orders


def schedule_zb1p(pp: int, m: int) -> list[list[Op]]:
    """ZB1P / ZB-H1 (zero-bubble paper, Qi et al. 2023): the backward split into BI and W; stage s runs, for
    x = 0, 1, …, the triple F_x, BI_{x−(PP−1−s)}, W_{x−(PP−1)} (each only where its index is in 0 … m−1).
    BI keeps 1F1B's place; W lags it by s micro-batches and fills the bubbles of the cool-down."""
    _check(pp, m, "ZB1P")
    orders = []
    for s in range(pp):
        ops = []
        for x in range(m + pp - 1):
            if x < m:
                ops.append(Op("F", x))
            if 0 <= x - (pp - 1 - s) < m:
                ops.append(Op("BI", x - (pp - 1 - s)))
            if 0 <= x - (pp - 1) < m:
                ops.append(Op("W", x - (pp - 1)))
        orders.append(ops)
    return orders


def schedule_dualpipe(pp: int, m: int) -> list[list[Op]]:
    """DualPipe: m micro-batches, m/2 entering at device 0 (direction 0) and m/2 at device PP−1 (direction 1).

    Per device r (half_rank h = min(r, PP−1−r); "phase 0" is the direction in which the device is stage h, i.e.
    direction 0 on the first half of the devices and direction 1 on the second half), the eight steps of
    ``DualPipe.step``:
      1 nF0: 2(PP/2 − h − 1) forwards of phase 0        2 nF0F1: h + 1 pairs of forwards (phase 0, phase 1)
      3 nB1W1F1: PP/2 − h − 1 × (BI phase 1, its W, F phase 1)
      4 nF0B1F1B0 (main): m/2 − PP + h + 1 × (F&B(F0, B1), F&B(F1, B0)); on the two middle devices the
        first F0, B1 are not overlapped
      5 nB1F1B0: PP/2 − h − 1 × (B phase 1, F&B(F1, B0))
      6 nB1B0: h + 1 × (B1, B0), the second half of them split (BI now, W later)
      7 nWB0: PP/2 − h − 1 × (W, BI phase 0)             8 nW: the remaining W, first in first out.
    """
    _check(pp, m, "DualPipe")
    half_pp, half_m = pp // 2, m // 2
    orders = []
    for r in range(pp):
        h = min(r, pp - 1 - r)
        second = int(r >= half_pp)
        middle = r in (half_pp - 1, half_pp)
        fc, bc, wq, ops = [0, 0], [0, 0], deque(), []

        def d(p):
            return p ^ second

        def f(p):
            ops.append(Op("F", fc[p], d(p)))
            fc[p] += 1

        def b(p, zb=False):
            mb = bc[p]
            bc[p] += 1
            if zb:
                ops.append(Op("BI", mb, d(p)))
                wq.append((mb, d(p)))
            else:
                ops.append(Op("B", mb, d(p)))

        def w():
            mb, dd = wq.popleft()
            ops.append(Op("W", mb, dd))

        def fb(p0, p1):
            ops.append(Op("F&B", fc[p0], d(p0), bc[p1], d(p1)))
            fc[p0] += 1
            bc[p1] += 1

        for _ in range(2 * (half_pp - h - 1)):           # step 1
            f(0)
        for _ in range(h + 1):                           # step 2
            f(0)
            f(1)
        for _ in range(half_pp - h - 1):                 # step 3
            b(1, zb=True)
            w()
            f(1)
        for i in range(half_m - pp + h + 1):             # step 4
            if i == 0 and middle:
                f(0)
                b(1)
            else:
                fb(0, 1)
            fb(1, 0)
        for _ in range(half_pp - h - 1):                 # step 5
            b(1)
            fb(1, 0)
        s6, zb = h + 1, False                            # step 6
        for i in range(s6):
            if i == s6 // 2 and h % 2 == 1:
                zb = True
            b(1, zb)
            if i == s6 // 2 and h % 2 == 0:
                zb = True
            b(0, zb)
        for _ in range(half_pp - h - 1):                 # step 7
            w()
            b(0, zb=True)
        for _ in range(h + 1):                           # step 8
            w()
        assert not wq and fc == [half_m, half_m] and bc == [half_m, half_m]
        orders.append(ops)
    return orders


def make_schedule(schedule: str, pp: int, m: int) -> list[list[Op]]:
    """The per-device op orders of ``schedule`` ("1F1B", "ZB1P" or "DualPipe")."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    return {"1F1B": schedule_1f1b, "ZB1P": schedule_zb1p, "DualPipe": schedule_dualpipe}[schedule](pp, m)


# ---- the simulator ------------------------------------------------------------------------------------------

def _stage(direction: int, device: int, pp: int) -> int:
    return device if direction == 0 else pp - 1 - device


def _device(direction: int, stage: int, pp: int) -> int:
    return stage if direction == 0 else pp - 1 - stage


@dataclass(frozen=True)
class Task:
    """A unit of work for :func:`simulate_tasks`: ``name`` (unique), ``duration``, the names it waits for."""
    name: str
    duration: float
    deps: tuple = ()


def simulate_tasks(streams: dict) -> dict:
    """The core list scheduler: ``streams`` maps a resource (a device, a compute or a communication stream) to
    its ordered list of :class:`Task`. Each task starts at max(end of the previous task on its stream, end of
    every task it depends on) — as early as allowed, never out of order. Returns {name: (stream, start, end)}.

    Raises ValueError on a duplicate name, a dependency on an unknown task, or a deadlock (an order that
    places a task before one it needs, through any chain of streams).
    """
    names = [t.name for ts in streams.values() for t in ts]
    if len(set(names)) != len(names):
        raise ValueError("task names must be unique")
    known = set(names)
    for ts in streams.values():
        for t in ts:
            if t.duration < 0:
                raise ValueError(f"task {t.name!r} has a negative duration {t.duration}")
            missing = [d for d in t.deps if d not in known]
            if missing:
                raise ValueError(f"task {t.name!r} depends on unknown task(s) {missing}")
    done: dict = {}
    free = {s: 0.0 for s in streams}
    pos = {s: 0 for s in streams}
    while len(done) < len(names):
        progressed = False
        for s, ts in streams.items():
            while pos[s] < len(ts):
                t = ts[pos[s]]
                if any(d not in done for d in t.deps):
                    break
                start = max([free[s]] + [done[d][2] for d in t.deps])
                done[t.name] = (s, start, start + t.duration)
                free[s] = start + t.duration
                pos[s] += 1
                progressed = True
        if not progressed:
            stuck = {s: ts[pos[s]].name for s, ts in streams.items() if pos[s] < len(ts)}
            raise ValueError(f"the schedule deadlocks: every stream waits ({stuck}); a task is placed before one it "
                             "depends on")
    return done


def simulate(orders: list[list[Op]], times: PassTimes, schedule: str = "") -> Timeline:
    """Run every device's op order as early as the dependencies allow; return the :class:`Timeline`.

    Dependencies (on (pass, direction, micro-batch, stage)): F at stage s needs F at s−1; the input gradient B
    at stage s needs B at s+1 (on the last stage, the same micro-batch's F); W needs B on its stage; an F&B op
    needs what both its halves need. Ops on one device never overlap and keep their order
    (:func:`simulate_tasks` does the timing). Raises ValueError if a pass runs twice, a needed pass is never
    scheduled, or the orders deadlock.
    """
    if not isinstance(times, PassTimes):
        raise TypeError(f"times must be a PassTimes, got {type(times).__name__}")
    pp = len(orders)
    if pp < 1:
        raise ValueError("orders must hold one op list per device")
    producer: dict[tuple, str] = {}
    for dev, ops in enumerate(orders):
        for i, op in enumerate(ops):
            for p, d, mb in op.parts():
                key = (p, d, mb, _stage(d, dev, pp))
                if key in producer:
                    raise ValueError(f"{p} of micro-batch {mb} (direction {d}) runs twice on device {dev}")
                producer[key] = f"{dev}:{i}"
    streams = {}
    for dev, ops in enumerate(orders):
        tasks = []
        for i, op in enumerate(ops):
            req = []
            for p, d, mb in op.parts():
                s = _stage(d, dev, pp)
                if p == "F" and s > 0:
                    req.append(("F", d, mb, s - 1))
                elif p == "B":
                    req.append(("B", d, mb, s + 1) if s < pp - 1 else ("F", d, mb, s))
                    req.append(("F", d, mb, s))
                elif p == "W" and op.kind == "W":
                    req.append(("B", d, mb, s))
            missing = [r for r in req if r not in producer]
            if missing:
                raise ValueError(f"device {dev}'s {op} needs {missing[0][0]} of micro-batch {missing[0][2]} on stage "
                                 f"{missing[0][3]}, which no device runs")
            deps = tuple(sorted({producer[r] for r in req} - {f"{dev}:{i}"}))
            tasks.append(Task(f"{dev}:{i}", times.duration(op.kind), deps))
        streams[dev] = tasks
    placed = simulate_tasks(streams)
    out = Timeline(pp=pp, schedule=schedule)
    for dev, ops in enumerate(orders):
        for i, op in enumerate(ops):
            _, start, end = placed[f"{dev}:{i}"]
            out.ops.append(Timed(dev, op, start, end))
    return out


def run_schedule(schedule: str, pp: int, m: int, times: PassTimes | None = None) -> Timeline:
    """:func:`make_schedule` then :func:`simulate`."""
    return simulate(make_schedule(schedule, pp, m), times or PassTimes(), schedule)


def bubble_formula(schedule: str, pp: int, times: PassTimes) -> float:
    """The report's bubble (Table 2): (PP−1)(F+B), (PP−1)(F+B−2W), (PP/2−1)(F&B+B−3W)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    F, B, W = times.F, times.B, times.W
    if schedule == "1F1B":
        return (pp - 1) * (F + B)
    if schedule == "ZB1P":
        return (pp - 1) * (F + B - 2 * W)
    return (pp / 2 - 1) * (times.fb + B - 3 * W)


def table_row(schedule: str, pp: int, m: int, times: PassTimes) -> dict:
    """Simulated vs formula for one setting: bubble (max and min over devices), parameters per device (stage
    copies held) and peak activations in flight."""
    tl = run_schedule(schedule, pp, m, times)
    bubbles = tl.bubbles()
    return {"schedule": schedule, "PP": pp, "micro_batches": m, "bubble_sim": max(bubbles),
            "bubble_sim_min": min(bubbles), "bubble_formula": bubble_formula(schedule, pp, times),
            "params_per_device": 2 if schedule == "DualPipe" else 1, "activations_sim": tl.peak_in_flight(),
            "activations_formula": pp + 1 if schedule == "DualPipe" else pp, "makespan": tl.makespan}


# ---- drawing --------------------------------------------------------------------------------------------

_COLORS = {"F": "#4c9be8", "B": "#3fb27f", "BI": "#8fd19e", "W": "#b58ee8", "F&B": "#f2a541"}


def gantt(tl: Timeline, ax=None, title: str | None = None, labels: bool = True):
    """Draw a timeline: one row per device, one box per op (F blue, B green, BI light green, W purple,
    F&B orange); labels give the micro-batch (a prime ' marks the reverse direction)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    ax = ax or plt.gca()
    for t in tl.ops:
        ax.barh(t.device, t.end - t.start, left=t.start, height=0.8, color=_COLORS[t.op.kind],
                edgecolor="black", linewidth=0.4)
        if labels and t.end - t.start > 0:
            ax.text((t.start + t.end) / 2, t.device, t.op.label, ha="center", va="center", fontsize=6)
    ax.set_yticks(range(tl.pp))
    ax.set_yticklabels([f"device {d}" for d in range(tl.pp)], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("time")
    ax.set_xlim(0, tl.makespan)
    kinds = sorted({t.op.kind for t in tl.ops}, key=list(_COLORS).index)
    ax.legend(handles=[Patch(color=_COLORS[k], label=k) for k in kinds], loc="lower right", bbox_to_anchor=(1.0, 1.0),
              fontsize=7, ncol=len(kinds), frameon=False)
    if title is not None:
        ax.set_title(title, fontsize=9, loc="left")
    return ax


def formula_exact(schedule: str, times: PassTimes) -> bool:
    """Whether the report's bubble formula is exact for these pass times, as found by simulation (the tests
    check it over a grid; outside these regions the simulated bubble differs and the notebook shows by how much):

    1F1B      always.
    ZB1P      W ≤ F and W ≤ B − W: a deferred W must fit in the gaps a forward or an input backward leaves.
    DualPipe  B − W = F (the input backward as long as the forward: the unit cells of the report's figure),
              W ≤ F and B ≤ F&B ≤ F + B.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    F, B, W, FB = times.F, times.B, times.W, times.fb
    eps = 1e-12 * max(1.0, F, B, FB)
    if schedule == "1F1B":
        return True
    if schedule == "ZB1P":
        return W <= F + eps and W <= B - W + eps
    return abs(B - W - F) <= eps and W <= F + eps and B - eps <= FB <= F + B + eps


# ---- overlap of computation and communication inside one F&B pair (§3.2.1, Figure 4) ---------------------

OVERLAP_COMPUTE = ("attn_f", "mlp_f", "mlp_b", "mlp_w", "attn_b", "attn_w")
OVERLAP_COMM = ("dispatch_f", "combine_f", "combine_b", "dispatch_b")


def overlap_tasks(times: dict, layers: int = 1, overlap: bool = True) -> dict:
    """Streams of :class:`Task` for a forward chunk and a backward chunk of ``layers`` MoE layers each.

    Forward, per layer l: attn_f → dispatch_f → mlp_f → combine_f (→ attn_f of layer l+1).
    Backward, per layer (from the last): combine_b → mlp_b → dispatch_b → attn_b (→ combine_b of the layer
    before); mlp_w after mlp_b and attn_w after attn_b (weight gradients, needed by nobody downstream).
    ``overlap=False``: one stream runs the forward chunk, then the backward chunk (communication blocks compute).
    ``overlap=True`` (DualPipe's pairing, two streams): compute runs attn_f, mlp_b, mlp_w, mlp_f, attn_b, attn_w
    per layer while the communication stream runs combine_b, dispatch_f, dispatch_b, combine_f.
    ``times`` gives the duration of each piece (keys OVERLAP_COMPUTE + OVERLAP_COMM).
    """
    need = set(OVERLAP_COMPUTE + OVERLAP_COMM)
    if set(times) != need:
        raise ValueError(f"times must have exactly the keys {sorted(need)}; missing {sorted(need - set(times))}, "
                         f"extra {sorted(set(times) - need)}")
    if any((not isinstance(v, (int, float))) or v != v or v < 0 for v in times.values()):
        raise ValueError(f"every time must be a number ≥ 0, got {times}")
    if not isinstance(layers, int) or layers < 1:
        raise ValueError(f"layers must be an int ≥ 1, got {layers!r}")

    def t(piece, l, deps=()):
        return Task(f"{piece}{l}", float(times[piece]), tuple(deps))

    fwd, bwd = [], []
    for l in range(layers):
        fwd += [t("attn_f", l, [f"combine_f{l - 1}"] if l else []), t("dispatch_f", l, [f"attn_f{l}"]),
                t("mlp_f", l, [f"dispatch_f{l}"]), t("combine_f", l, [f"mlp_f{l}"])]
        bwd += [t("combine_b", l, [f"attn_b{l - 1}"] if l else []), t("mlp_b", l, [f"combine_b{l}"]),
                t("mlp_w", l, [f"mlp_b{l}"]), t("dispatch_b", l, [f"mlp_b{l}"]), t("attn_b", l, [f"dispatch_b{l}"]),
                t("attn_w", l, [f"attn_b{l}"])]
    if not overlap:
        return {"serial": fwd + bwd}
    by = {x.name: x for x in fwd + bwd}
    compute = [by[f"{p}{l}"] for l in range(layers) for p in ("attn_f", "mlp_b", "mlp_w", "mlp_f", "attn_b", "attn_w")]
    comm = [by[f"{p}{l}"] for l in range(layers) for p in ("combine_b", "dispatch_f", "dispatch_b", "combine_f")]
    return {"compute": compute, "comm": comm}


def pair_time(times: dict, layers: int = 1, overlap: bool = True) -> float:
    """Makespan of the forward + backward chunk pair of ``layers`` layers (see :func:`overlap_tasks`)."""
    placed = simulate_tasks(overlap_tasks(times, layers, overlap))
    return max(end for _, _, end in placed.values())


def steady_layer_time(times: dict, overlap: bool = True) -> float:
    """Time per layer of an F&B pair in its steady state: (makespan of 6 layers − makespan of 2 layers) / 4,
    which removes the start-up and drain of the chunk. Communication is fully hidden when this equals the
    compute time per layer (the sum of the OVERLAP_COMPUTE pieces)."""
    return (pair_time(times, 6, overlap) - pair_time(times, 2, overlap)) / 4


def hiding_threshold(compute: dict, comm_shape: dict, tol: float = 1e-9) -> float:
    """The largest ratio ρ = (total communication) / (total computation) of one layer's F&B pair for which the
    overlapped steady state is still compute-bound (communication fully hidden).

    ``compute``: times of the OVERLAP_COMPUTE pieces; ``comm_shape``: relative sizes of the OVERLAP_COMM pieces
    (scaled so that they sum to ρ · Σ compute). Found by bisection on ρ with the simulator.
    """
    total_c = float(sum(compute.values()))
    total_s = float(sum(comm_shape.values()))
    if total_c <= 0 or total_s <= 0:
        raise ValueError("compute and comm_shape must have positive totals")

    def hidden(rho):
        times = dict(compute, **{k: v / total_s * rho * total_c for k, v in comm_shape.items()})
        return steady_layer_time(times, overlap=True) <= total_c * (1 + 1e-9)

    lo, hi = 0.0, 1.0
    while hidden(hi):
        lo, hi = hi, hi * 2
        if hi > 1e6:
            return math.inf
    while hi - lo > tol * max(1.0, hi):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if hidden(mid) else (lo, mid)
    return lo


def pass_flops(fn, x, params) -> dict:
    """Matmul FLOPs of one piece of a layer: ``{"f": forward, "b": input-gradient backward, "w": weight backward}``.

    Counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and attention kernels: 2 FLOPs per
    multiply-add; element-wise work such as norms, softmax and SiLU is not counted): the forward ``fn(x)``;
    the backward of ``fn(x)`` with every tensor of ``params`` frozen, so autograd computes only ∂L/∂x (B);
    the full backward with ``params`` trainable; W = full − B (the weight-gradient GEMMs, DualPipe's W).
    FLOPs are integers that depend only on shapes (and, for an MoE, on K tokens per routed expert in total),
    so they are the same on every machine — unlike timings. ``x`` is a leaf tensor (it is given
    ``requires_grad``); the ``requires_grad`` flags of ``params`` are restored and their ``.grad`` cleared.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if not callable(fn):
        raise TypeError(f"fn must be a function x -> tensor, got {type(fn).__name__}")
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {type(x).__name__}")
    params = list(params)
    if not params or not all(torch.is_tensor(p) for p in params):
        raise ValueError("params must be a non-empty list of the piece's parameter tensors, e.g. list(block.parameters())")

    def count(run):
        with FlopCounterMode(display=False) as fc:
            run()
        return int(fc.get_total_flops())

    x = x.detach().clone().requires_grad_(True)
    flags = [p.requires_grad for p in params]
    try:
        fwd = count(lambda: fn(x))
        back = {}
        for weights in (False, True):
            for p in params:
                p.requires_grad_(weights)
            y = fn(x)
            back[weights] = count(lambda: y.backward(torch.ones_like(y)))
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
            p.grad = None
    return {"f": fwd, "b": back[False], "w": back[True] - back[False]}


def overlap_compute_flops(attn_fn, mlp_fn, x, params) -> dict:
    """The six compute pieces of one layer of an F&B pair (keys :data:`OVERLAP_COMPUTE`) as matmul FLOPs:
    ATTN(F), ATTN(B), ATTN(W) from :func:`pass_flops` of ``attn_fn`` and MLP(F), MLP(B), MLP(W) of ``mlp_fn``
    (both called on the same input ``x``; ``params``: the block's parameters)."""
    params = list(params)
    a, m = pass_flops(attn_fn, x, params), pass_flops(mlp_fn, x, params)
    return {"attn_f": a["f"], "mlp_f": m["f"], "mlp_b": m["b"], "mlp_w": m["w"], "attn_b": a["b"], "attn_w": a["w"]}


def flops_to_times(flops: dict, flops_per_s: float = 1e12) -> dict:
    """Times of the pieces at one nominal throughput, t = FLOPs / ``flops_per_s`` (every piece equally efficient:
    only the ratios between pieces matter for the overlap simulation, and they are exact)."""
    if not (isinstance(flops_per_s, (int, float)) and math.isfinite(flops_per_s) and flops_per_s > 0):
        raise ValueError(f"flops_per_s must be a finite number > 0, got {flops_per_s!r}; e.g. 1e12")
    bad = {k: v for k, v in flops.items() if not isinstance(v, (int, float)) or v != v or v < 0}
    if bad:
        raise ValueError(f"FLOP counts must be numbers ≥ 0, got {bad}")
    return {k: v / flops_per_s for k, v in flops.items()}


def gantt_streams(placed: dict, ax=None, title: str | None = None):
    """Draw the result of :func:`simulate_tasks`: one row per stream; compute pieces in blue/green shades,
    communication in orange (forward pieces darker than backward ones)."""
    import matplotlib.pyplot as plt
    ax = ax or plt.gca()
    streams = list(dict.fromkeys(s for s, _, _ in placed.values()))
    colors = {"attn_f": "#4c9be8", "mlp_f": "#1f5fa8", "attn_b": "#3fb27f", "mlp_b": "#1e7a4f", "attn_w": "#b58ee8",
              "mlp_w": "#7b4fbf", "dispatch_f": "#f2a541", "combine_f": "#d9731a", "dispatch_b": "#f6c48a",
              "combine_b": "#e89a5c"}
    for name, (s, start, end) in placed.items():
        piece = name.rstrip("0123456789")
        ax.barh(streams.index(s), end - start, left=start, height=0.7, color=colors.get(piece, "grey"),
                edgecolor="black", linewidth=0.4)
        if end - start > 0:
            ax.text((start + end) / 2, streams.index(s), piece.replace("_", "\n"), ha="center", va="center", fontsize=5)
    ax.set_yticks(range(len(streams)))
    ax.set_yticklabels(streams, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("time")
    if title:
        ax.set_title(title, fontsize=9)
    return ax
