"""Pipeline schedules: simulated bubbles equal the report's Table 2 where its assumptions hold; the simulator
respects every dependency and equals an independent longest-path computation."""
import functools

import pytest
from hypothesis import given, settings, strategies as st

from helpers.pipeline import (OVERLAP_COMM, OVERLAP_COMPUTE, Op, PassTimes, SCHEDULES, Task, bubble_formula,
                              formula_exact, hiding_threshold, make_schedule, min_microbatches, overlap_tasks,
                              pair_time, run_schedule, simulate, simulate_tasks, steady_layer_time, table_row)

times_st = st.floats(0.1, 4.0, allow_nan=False).map(lambda v: round(v, 3))


def _close(a, b):
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


@settings(max_examples=60, deadline=None)
@given(pp=st.integers(1, 8), extra=st.integers(0, 6), F=times_st, B=times_st, wf=st.floats(0, 1))
def test_1f1b_bubble_equals_formula_on_every_device(pp, extra, F, B, wf):
    t = PassTimes(F, B, B * wf)
    tl = run_schedule("1F1B", pp, pp + extra, t)
    assert all(_close(b, (pp - 1) * (F + B)) for b in tl.bubbles())
    assert tl.in_flight(0) == pp and tl.peak_in_flight() == pp


@settings(max_examples=60, deadline=None)
@given(pp=st.integers(1, 8), extra=st.integers(0, 6), W=times_st, df=times_st, db=times_st)
def test_zb1p_bubble_equals_formula_when_w_fits(pp, extra, W, df, db):
    t = PassTimes(F=W + df, B=2 * W + db, W=W)          # W ≤ F and W ≤ B − W
    assert formula_exact("ZB1P", t)
    tl = run_schedule("ZB1P", pp, pp + extra, t)
    assert all(_close(b, bubble_formula("ZB1P", pp, t)) for b in tl.bubbles())
    assert tl.in_flight(0) == pp and tl.peak_in_flight() == pp


@settings(max_examples=60, deadline=None)
@given(half=st.integers(1, 6), extra=st.integers(0, 4), F=times_st, wf=st.floats(0, 1), ov=st.floats(0, 1))
def test_dualpipe_bubble_equals_formula_when_input_backward_equals_forward(half, extra, F, wf, ov):
    pp = 2 * half
    W = round(F * wf, 3)
    B = F + W
    t = PassTimes(F, B, W, FB=B + ov * F)                # B ≤ F&B ≤ F + B
    assert formula_exact("DualPipe", t)
    tl = run_schedule("DualPipe", pp, 2 * pp + 2 * extra, t)
    assert _close(tl.bubble, bubble_formula("DualPipe", pp, t))
    assert tl.peak_in_flight() == pp + 1


def test_formula_outside_its_assumptions_differs():
    # ZB1P with a weight pass longer than the forward: the deferred W no longer fits into the bubbles
    t = PassTimes(F=1, B=3, W=2)
    assert not formula_exact("ZB1P", t)
    r = table_row("ZB1P", 4, 8, t)
    assert r["bubble_sim"] > r["bubble_formula"] + 0.5
    # DualPipe with the input backward longer than the forward
    t = PassTimes(F=1, B=3, W=0, FB=3)
    assert not formula_exact("DualPipe", t)
    r = table_row("DualPipe", 8, 16, t)
    assert not _close(r["bubble_sim"], r["bubble_formula"])


def test_report_units_table():
    # F = 1, B = 2, W = 1, F&B = F + B: the report's table in numbers
    t = PassTimes(1, 2, 1)
    for pp in (4, 8, 16):
        rows = {s: table_row(s, pp, 2 * pp, t) for s in SCHEDULES}
        assert rows["1F1B"]["bubble_sim"] == 3 * (pp - 1)
        assert rows["ZB1P"]["bubble_sim"] == 1 * (pp - 1)
        assert rows["DualPipe"]["bubble_sim"] == (pp / 2 - 1) * 2
        assert [rows[s]["activations_sim"] for s in SCHEDULES] == [pp, pp, pp + 1]


@pytest.mark.parametrize("schedule,pp,m", [("1F1B", 4, 6), ("ZB1P", 5, 7), ("DualPipe", 4, 10), ("DualPipe", 6, 12)])
def test_dependencies_and_one_op_at_a_time(schedule, pp, m):
    tl = run_schedule(schedule, pp, m, PassTimes(1.3, 2.1, 0.7, 2.5))
    end = {}
    for t in tl.ops:
        for p, d, mb in t.op.parts():
            s = t.device if d == 0 else pp - 1 - t.device
            end[(p, d, mb, s)] = t.end
    for t in tl.ops:
        for p, d, mb in t.op.parts():
            s = t.device if d == 0 else pp - 1 - t.device
            if p == "F" and s > 0:
                assert t.start >= end[("F", d, mb, s - 1)] - 1e-12
            if p == "B":
                assert t.start >= end[("B", d, mb, s + 1) if s < pp - 1 else ("F", d, mb, s)] - 1e-12
            if p == "W" and t.op.kind == "W":
                assert t.start >= end[("B", d, mb, s)] - 1e-12
    for dev in range(pp):
        ops = tl.on(dev)
        assert all(a.end <= b.start + 1e-12 for a, b in zip(ops, ops[1:]))
    # every (pass, direction, micro-batch) runs exactly once on every stage
    dirs = 2 if schedule == "DualPipe" else 1
    assert len(end) == 3 * pp * m // dirs * dirs


def test_simulator_equals_longest_path_bruteforce():
    """Earliest start of every task = longest path to it in the DAG of dependencies + stream order."""
    for schedule, pp, m in (("1F1B", 3, 4), ("ZB1P", 3, 5), ("DualPipe", 4, 8)):
        t = PassTimes(1.1, 1.9, 0.6, 2.2)
        orders = make_schedule(schedule, pp, m)
        tl = simulate(orders, t)
        timed = {(x.device, i): x for dev in range(pp) for i, x in enumerate(tl.on(dev))}
        produced = {}
        for (dev, i), x in timed.items():
            for p, d, mb in x.op.parts():
                produced[(p, d, mb, dev if d == 0 else pp - 1 - dev)] = (dev, i)

        @functools.lru_cache(None)
        def start(dev, i):
            op = orders[dev][i]
            preds = [(dev, i - 1)] if i else []
            for p, d, mb in op.parts():
                s = dev if d == 0 else pp - 1 - dev
                if p == "F" and s > 0:
                    preds.append(produced[("F", d, mb, s - 1)])
                if p == "B":
                    preds.append(produced[("B", d, mb, s + 1)] if s < pp - 1 else produced[("F", d, mb, s)])
                if p == "W" and op.kind == "W":
                    preds.append(produced[("B", d, mb, s)])
            return max([0.0] + [start(*q) + t.duration(orders[q[0]][q[1]].kind) for q in preds if q != (dev, i)])

        for (dev, i), x in timed.items():
            assert abs(x.start - start(dev, i)) < 1e-9


def test_clear_errors():
    with pytest.raises(ValueError, match="even PP"):
        make_schedule("DualPipe", 5, 20)
    with pytest.raises(ValueError, match="micro-batches"):
        make_schedule("DualPipe", 4, 6)
    with pytest.raises(ValueError, match="micro-batches"):
        make_schedule("DualPipe", 4, 9)
    with pytest.raises(ValueError, match="micro-batches"):
        make_schedule("1F1B", 4, 3)
    with pytest.raises(ValueError, match="PP"):
        make_schedule("ZB1P", 0, 3)
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule("GPipe", 4, 8)
    with pytest.raises(ValueError, match="F must be a number ≥ 0"):
        PassTimes(F=-1)
    with pytest.raises(ValueError, match="W ≤ B"):
        PassTimes(F=1, B=1, W=2)
    with pytest.raises(ValueError, match="FB"):
        PassTimes(FB=-0.5)
    with pytest.raises(TypeError, match="PassTimes"):
        simulate(make_schedule("1F1B", 2, 2), {"F": 1})
    assert min_microbatches("DualPipe", 8) == 16 and min_microbatches("ZB1P", 8) == 8


def test_deadlock_and_missing_pass_detected():
    with pytest.raises(ValueError, match="deadlock"):
        simulate([[Op("F", 0), Op("B", 0)], [Op("B", 0), Op("F", 0)]], PassTimes())   # B before the F it needs
    with pytest.raises(ValueError, match="no device runs"):
        simulate([[Op("B", 0)], [Op("F", 0), Op("B", 0)]], PassTimes())
    with pytest.raises(ValueError, match="deadlock"):
        simulate_tasks({"a": [Task("x", 1, ("y",))], "b": [Task("y", 1, ("x",))]})
    with pytest.raises(ValueError, match="unknown"):
        simulate_tasks({"a": [Task("x", 1, ("z",))]})


def _pieces(c=1.0, comm=1.0):
    return dict({k: c for k in OVERLAP_COMPUTE}, dispatch_f=comm / 2, combine_f=comm, combine_b=comm, dispatch_b=comm)


def test_overlap_serial_is_the_sum_and_overlap_never_slower():
    for comm in (0.0, 0.5, 2.0, 8.0):
        t = _pieces(1.0, comm)
        assert pair_time(t, 3, overlap=False) == pytest.approx(3 * sum(t.values()))
        assert pair_time(t, 3, overlap=True) <= pair_time(t, 3, overlap=False) + 1e-12
        # overlapped: never faster than the busier stream
        assert steady_layer_time(t) >= max(sum(t[k] for k in OVERLAP_COMPUTE), sum(t[k] for k in OVERLAP_COMM)) - 1e-9


def test_hiding_threshold_separates_hidden_from_exposed():
    compute = {k: v for k, v in zip(OVERLAP_COMPUTE, (1.0, 1.5, 1.2, 0.8, 1.4, 0.9))}
    shape = {"dispatch_f": 1.0, "combine_f": 2.0, "combine_b": 2.0, "dispatch_b": 2.0}
    rho = hiding_threshold(compute, shape)
    assert 0 < rho < 1
    total = sum(compute.values())
    for r, hidden in ((rho * 0.98, True), (rho * 1.05, False)):
        t = dict(compute, **{k: v / 7 * r * total for k, v in shape.items()})
        assert (abs(steady_layer_time(t) - total) < 1e-9) == hidden


def test_overlap_errors():
    with pytest.raises(ValueError, match="keys"):
        overlap_tasks({"attn_f": 1})
    with pytest.raises(ValueError, match="≥ 0"):
        overlap_tasks(dict(_pieces(), attn_f=-1.0))
    with pytest.raises(ValueError, match="layers"):
        overlap_tasks(_pieces(), layers=0)


def test_pass_flops_equals_closed_form_for_linears_and_attention():
    import torch
    from helpers.pipeline import flops_to_times, overlap_compute_flops, pass_flops
    torch.manual_seed(0)
    n, d, h = 6, 16, 24
    l1, l2 = torch.nn.Linear(d, h, bias=False), torch.nn.Linear(h, d, bias=False)
    x = torch.randn(n, d)
    mlp = lambda t: l2(torch.relu(l1(t)))
    fl = pass_flops(mlp, x, list(l1.parameters()) + list(l2.parameters()))
    # forward: 2·n·(d·h + h·d); input-gradient backward: the same GEMMs transposed; weight gradients: the same again
    assert fl == {"f": 4 * n * d * h, "b": 4 * n * d * h, "w": 4 * n * d * h}
    # attention core has no weights: backward = 2 × forward (dQ, dK, dV, dP), W counts only the projection
    proj = torch.nn.Linear(d, 3 * d, bias=False)

    def attn(t):
        q, k, v = proj(t).split(d, dim=-1)
        return (q @ k.T).softmax(-1) @ v
    fa = pass_flops(attn, x, list(proj.parameters()))
    lin, core = 2 * n * d * 3 * d, 2 * 2 * n * n * d
    assert fa == {"f": lin + core, "b": lin + 2 * core, "w": lin}
    assert proj.weight.requires_grad and proj.weight.grad is None          # flags restored, grads cleared
    six = overlap_compute_flops(attn, mlp, x, list(proj.parameters()) + list(l1.parameters()) + list(l2.parameters()))
    assert set(six) == set(OVERLAP_COMPUTE) and six["attn_b"] == fa["b"] and six["mlp_w"] == fl["w"]
    t = flops_to_times(six, 2.0)
    assert t["attn_f"] == six["attn_f"] / 2.0
    with pytest.raises(ValueError, match="flops_per_s"):
        flops_to_times(six, 0)
    with pytest.raises(ValueError, match="≥ 0"):
        flops_to_times({"attn_f": -1}, 1.0)
    with pytest.raises(TypeError, match="fn"):
        pass_flops(3, x, [proj.weight])
    with pytest.raises(ValueError, match="params"):
        pass_flops(mlp, x, [])
