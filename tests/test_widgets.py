import ipywidgets
import pytest

from helpers import widgets


def test_builders_make_core_widgets():
    assert isinstance(widgets.slider(0.5, 0, 1, description="x"), ipywidgets.FloatSlider)
    assert isinstance(widgets.log_slider(1e-3, -5, 0), ipywidgets.FloatLogSlider)
    assert isinstance(widgets.int_slider(3, 1, 8), ipywidgets.IntSlider)
    assert widgets.dropdown(["a", "b"]).value == "a"
    assert widgets.dropdown([("A", 1), ("B", 2)], value=2).value == 2
    assert widgets.checkbox(True).value is True
    box = widgets.text_box("12+7=", "prompt")
    assert isinstance(box, ipywidgets.Text) and box.value == "12+7=" and box.continuous_update is False
    assert widgets.ipywidgets_major() in (7, 8)


def test_builders_reject_bad_values():
    with pytest.raises(ValueError, match="outside"):
        widgets.slider(2.0, 0, 1)
    with pytest.raises(ValueError, match="not one of"):
        widgets.dropdown(["a"], value="z")
    with pytest.raises(ValueError, match="outside"):
        widgets.int_slider(0, 1, 8)
    with pytest.raises(TypeError, match="must be a string"):
        widgets.text_box(3)


def test_live_displays_once_and_returns_none(monkeypatch):
    # a returned widget would be rendered a second time when live(...) ends a notebook cell
    seen, shown = [], []
    monkeypatch.delenv("COURSE_STATIC", raising=False)
    monkeypatch.delenv("COURSE_MOVE_CONTROLS", raising=False)
    monkeypatch.setattr("IPython.display.display", lambda *objs, **kw: shown.append(objs))
    result = widgets.live(lambda x, k: seen.append((x, k)), x=widgets.int_slider(2, 1, 5), k="fixed")
    assert result is None
    assert len(shown) == 1 and len(shown[0]) == 1
    box = shown[0][0]
    assert isinstance(box, ipywidgets.VBox)
    assert seen[-1] == (2, "fixed")
    box.children[0].children[0].value = 4
    assert seen[-1] == (4, "fixed")


def test_live_rejects_controls_that_do_not_fit_fn(monkeypatch):
    monkeypatch.delenv("COURSE_STATIC", raising=False)
    monkeypatch.delenv("COURSE_MOVE_CONTROLS", raising=False)
    with pytest.raises(TypeError, match="one control .* per parameter"):
        widgets.live(lambda x: x, y=widgets.int_slider(2, 1, 5))
    with pytest.raises(TypeError, match="fn must be a function"):
        widgets.live(3, x=widgets.int_slider(2, 1, 5))


def test_live_static_mode_runs_once_without_widgets(monkeypatch, capsys):
    seen = []
    monkeypatch.setenv("COURSE_STATIC", "1")
    assert widgets.live(lambda x: seen.append(x), x=widgets.slider(0.25, 0, 1)) is None
    assert seen == [0.25]
    assert "static view" in capsys.readouterr().out
    with pytest.raises(ValueError):
        widgets.live(lambda x: x, x=1)


# ---- control-moving mode (COURSE_MOVE_CONTROLS=1) ----

@pytest.fixture
def moving(monkeypatch):
    """live() in control-moving mode, with display() captured; returns the list of displayed objects."""
    shown = []
    monkeypatch.delenv("COURSE_STATIC", raising=False)
    monkeypatch.setenv("COURSE_MOVE_CONTROLS", "1")
    monkeypatch.setattr("IPython.display.display", lambda *objs, **kw: shown.append(objs))
    return shown


def test_live_moves_every_kind_of_control_then_restores(moving):
    seen = []
    controls = dict(x=widgets.slider(0.5, 0, 1, step=0.3), n=widgets.int_slider(3, 1, 8, step=2),
                    lr=widgets.log_slider(1e-3, -5, -1, step=0.5), mode=widgets.dropdown(["a", "b", "c"], "b"),
                    on=widgets.checkbox(False), prompt=widgets.text_box("12+7="))

    def view(x, n, lr, mode, on, prompt):
        seen.append(dict(x=x, n=n, lr=lr, mode=mode, on=on, prompt=prompt))

    widgets.live(view, **controls)
    initial = seen[0]
    assert initial == dict(x=0.5, n=3, lr=1e-3, mode="b", on=False, prompt="12+7=")
    moved = {}                                     # control -> values it was seen at while the others were initial
    for call in seen[1:]:
        changed = [k for k in call if call[k] != initial[k]]
        assert len(changed) <= 1, f"two controls moved at once: {call}"
        if changed:
            moved.setdefault(changed[0], []).append(call[changed[0]])
    # sliders: far end, other end, middle -- on the step (0.9, not 1.0; 7, not 8)
    assert moved["x"] == [0.9, 0.0, 0.3]
    assert moved["n"] == [7, 1]                    # the middle (3) is the initial value: no move
    assert moved["lr"] == pytest.approx([1e-1, 1e-5])   # 10**-1, 10**-5; the middle 10**-3 is the initial value
    assert moved["mode"] == ["a", "c"]
    assert moved["on"] == [True]
    assert "prompt" not in moved                   # a text box is left alone
    assert seen[-1] == initial                     # every control is back where it started
    assert all(c.value == initial[k] for k, c in controls.items())


def test_live_names_the_control_and_value_where_fn_fails(moving):
    def view(depth, mode):
        if depth > 6:
            raise ValueError("too deep for this view")

    with pytest.raises(AssertionError, match=r"depth=8: ValueError: too deep for this view") as info:
        widgets.live(view, depth=widgets.int_slider(2, 1, 8), mode=widgets.dropdown(["x", "y"]))
    assert "1 problem" in str(info.value)          # depth=1 and depth=4 (the middle) and mode=y ran fine
    assert isinstance(info.value.__cause__, ValueError)


def test_live_reports_a_failure_at_the_initial_values(moving):
    with pytest.raises(AssertionError, match=r"initial values .* ZeroDivisionError"):
        widgets.live(lambda k: 1 / (k - 2), k=widgets.int_slider(2, 1, 3))


def test_live_moves_fewer_values_when_fn_is_slow(moving, monkeypatch):
    seen = []
    monkeypatch.setattr(widgets, "MOVE_BUDGET_S", 0.0)     # every call is over budget: one move per control
    widgets.live(lambda a, b: seen.append((a, b)), a=widgets.int_slider(1, 1, 9), b=widgets.dropdown(list("pqrstuv")))
    assert seen == [(1, "p"), (9, "p"), (1, "p"), (1, "q"), (1, "p")]


def test_live_reruns_fn_synchronously_when_the_kernel_sets_a_value(monkeypatch):
    # the mover relies on this, in ipywidgets 7 (Colab) and 8 alike: setting .value from Python re-runs fn at once
    seen = []
    monkeypatch.delenv("COURSE_STATIC", raising=False)
    monkeypatch.delenv("COURSE_MOVE_CONTROLS", raising=False)
    monkeypatch.setattr("IPython.display.display", lambda *objs, **kw: None)
    control = widgets.int_slider(1, 0, 5)
    widgets.live(lambda v: seen.append(v), v=control)
    control.value = 4
    assert seen == [1, 4]


def test_matplotlib_post_execute_hooks_wait_for_a_redraw(monkeypatch):
    # ipykernel fires post_execute after every widget message, on whichever thread handled it; pyplot then redrew (and
    # the inline backend closed) the figure fn was drawing on another thread. Guarded, the hook runs after fn.
    import threading
    import time
    from types import SimpleNamespace
    from IPython.core.events import EventManager
    order = []

    def flush_figures():
        order.append("hook")

    flush_figures.__module__ = "matplotlib_inline.backend_inline"
    shell = SimpleNamespace(events=EventManager(None, {"post_execute"}))
    shell.events.register("post_execute", flush_figures)
    monkeypatch.setattr("IPython.get_ipython", lambda: shell)
    monkeypatch.delenv("COURSE_STATIC", raising=False)
    monkeypatch.delenv("COURSE_MOVE_CONTROLS", raising=False)
    monkeypatch.setattr("IPython.display.display", lambda *objs, **kw: None)
    other = []

    def view(v):
        if v:                                   # a move: another thread handles a widget message meanwhile
            other.append(threading.Thread(target=shell.events.trigger, args=("post_execute",)))
            other[0].start()
            time.sleep(0.05)
        order.append(f"fn {v}")

    control = widgets.int_slider(0, 0, 5)
    widgets.live(view, v=control)
    control.value = 2
    other[0].join()
    assert order == ["fn 0", "fn 2", "hook"]
    widgets.live(view, v=widgets.int_slider(0, 0, 5))          # guarding twice wraps once
    assert len(shell.events.callbacks["post_execute"]) == 1
    shell.events.unregister("post_execute", flush_figures)     # matplotlib can still remove its own hook
    assert shell.events.callbacks["post_execute"] == []


def test_hooks_registered_by_fns_first_figure_are_guarded(monkeypatch):
    # matplotlib registers its post_execute hooks lazily, when the kernel's first figure is made: in 02.3 that was
    # inside fn's first redraw, after live() had looked for hooks, so they ran unguarded and blanked every move
    from types import SimpleNamespace
    from IPython.core.events import EventManager

    def _draw_all_if_interactive():
        pass

    _draw_all_if_interactive.__module__ = "matplotlib.pyplot"
    shell = SimpleNamespace(events=EventManager(None, {"post_execute"}))
    monkeypatch.setattr("IPython.get_ipython", lambda: shell)
    monkeypatch.delenv("COURSE_STATIC", raising=False)
    monkeypatch.delenv("COURSE_MOVE_CONTROLS", raising=False)
    monkeypatch.setattr("IPython.display.display", lambda *objs, **kw: None)

    def view(v):                                   # the first figure of the kernel: matplotlib installs its hook
        shell.events.register("post_execute", _draw_all_if_interactive)

    widgets.live(view, v=widgets.int_slider(0, 0, 5))
    assert [type(h).__name__ for h in shell.events.callbacks["post_execute"]] == ["_WaitsForRedraw"]


def test_live_redraws_one_at_a_time_across_threads(monkeypatch):
    # JupyterLab 4 + ipykernel 7 may deliver two controls' messages on two threads (main shell and a subshell)
    import threading
    import time
    monkeypatch.delenv("COURSE_STATIC", raising=False)
    monkeypatch.delenv("COURSE_MOVE_CONTROLS", raising=False)
    monkeypatch.setattr("IPython.display.display", lambda *objs, **kw: None)
    active, most = [], []

    def view(a, b):
        active.append(1)
        most.append(len(active))
        time.sleep(0.02)
        active.pop()

    a, b = widgets.int_slider(0, 0, 9), widgets.int_slider(0, 0, 9)
    widgets.live(view, a=a, b=b)
    threads = [threading.Thread(target=lambda c=c: [setattr(c, "value", v) for v in range(1, 6)]) for c in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(most) == 11 and max(most) == 1


def test_live_does_not_move_controls_in_static_mode(monkeypatch, capsys):
    seen = []
    monkeypatch.setenv("COURSE_STATIC", "1")
    monkeypatch.setenv("COURSE_MOVE_CONTROLS", "1")
    widgets.live(lambda x: seen.append(x), x=widgets.int_slider(2, 1, 5))
    assert seen == [2]


def test_live_does_not_move_controls_by_default(monkeypatch):
    seen = []
    monkeypatch.delenv("COURSE_STATIC", raising=False)
    monkeypatch.delenv("COURSE_MOVE_CONTROLS", raising=False)
    monkeypatch.setattr("IPython.display.display", lambda *objs, **kw: None)
    widgets.live(lambda x: seen.append(x), x=widgets.int_slider(2, 1, 5))
    assert seen == [2]


def test_live_gives_each_control_one_move_once_the_time_is_spent(moving, monkeypatch):
    import time
    seen = []
    monkeypatch.setattr(widgets, "MOVE_BUDGET_S", 0.05)    # fn is fast at its initial values, slow once moved

    def view(a, b):
        seen.append((a, b))
        if (a, b) != (1, "p"):
            time.sleep(0.11)                        # past the deadline (2 x 0.05 s) after the first move

    widgets.live(view, a=widgets.int_slider(1, 1, 9), b=widgets.dropdown(list("pqrstuv")))
    assert seen == [(1, "p"), (9, "p"), (1, "p"), (1, "q"), (1, "p")]
