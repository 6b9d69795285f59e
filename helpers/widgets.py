"""Widgets that work on ipywidgets 7.7.1 (Colab) and 8 (JupyterLab 4).

Only core widgets and ``Output`` are used: both exist, with the same arguments, in both versions.
The logic a widget explores always lives in a pure function elsewhere in ``helpers``, tested without
any widget; :func:`live` only wires controls to that function.
"""
from __future__ import annotations

import functools
import inspect
import math
import numbers
import os
import sys
import threading
import time
from typing import Callable, Sequence

__all__ = ["live", "slider", "log_slider", "int_slider", "dropdown", "checkbox", "text_box", "ipywidgets_major"]

_STYLE = {"description_width": "initial"}
_LAYOUT = {"width": "420px"}


def _w():
    import ipywidgets
    return ipywidgets


def ipywidgets_major() -> int:
    """The installed ipywidgets major version (7 on Colab, 8 in JupyterLab 4)."""
    return int(_w().__version__.split(".")[0])


def _real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _whole(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def slider(value: float, min: float, max: float, step: float | None = None, description: str = "", readout_format: str = ".3g"):
    """A float slider."""
    if not all(_real(v) for v in (value, min, max)) or not min < max:
        raise ValueError(f"slider {description!r}: need finite numbers with min < max, got value={value!r}, "
                         f"min={min!r}, max={max!r}")
    if not (min <= value <= max):
        raise ValueError(f"slider {description!r}: value {value} is outside [{min}, {max}]; start it inside the range")
    if step is not None and not (_real(step) and step > 0):
        raise ValueError(f"slider {description!r}: step must be a positive number or None (= range / 100), got {step!r}")
    w = _w()
    return w.FloatSlider(value=value, min=min, max=max, step=step or (max - min) / 100, description=description,
                         readout_format=readout_format, continuous_update=False, style=_STYLE, layout=w.Layout(**_LAYOUT))


def log_slider(value: float, min_exp: float, max_exp: float, base: float = 10, step: float = 0.1, description: str = ""):
    """A float slider moving on a log scale: values from base**min_exp to base**max_exp."""
    if not all(_real(v) for v in (value, min_exp, max_exp, base, step)) or not (min_exp < max_exp and base > 1 and step > 0):
        raise ValueError(f"log_slider {description!r}: need finite numbers with min_exp < max_exp, base > 1 and "
                         f"step > 0, got min_exp={min_exp!r}, max_exp={max_exp!r}, base={base!r}, step={step!r}")
    if not (base ** min_exp <= value <= base ** max_exp):
        raise ValueError(f"log_slider {description!r}: value {value} is outside [{base}**{min_exp}, {base}**{max_exp}]; "
                         "start it inside the range")
    w = _w()
    return w.FloatLogSlider(value=value, base=base, min=min_exp, max=max_exp, step=step, description=description,
                            continuous_update=False, style=_STYLE, layout=w.Layout(**_LAYOUT))


def int_slider(value: int, min: int, max: int, step: int = 1, description: str = ""):
    """An integer slider."""
    if not all(_whole(v) for v in (value, min, max, step)):
        raise ValueError(f"int_slider {description!r}: value, min, max and step must be ints, got value={value!r}, "
                         f"min={min!r}, max={max!r}, step={step!r}; use slider() for fractional values")
    if not (min <= value <= max) or step < 1:
        raise ValueError(f"int_slider {description!r}: value {value} is outside [{min}, {max}] (or step {step} < 1); "
                         "start it inside the range")
    w = _w()
    return w.IntSlider(value=int(value), min=int(min), max=int(max), step=int(step), description=description,
                       continuous_update=False, style=_STYLE, layout=w.Layout(**_LAYOUT))


def dropdown(options: Sequence, value=None, description: str = ""):
    """A dropdown over ``options`` (a list of values or of (label, value) pairs)."""
    options = list(options)
    if not options:
        raise ValueError(f"dropdown {description!r}: needs at least one option")
    values = [o[1] if isinstance(o, tuple) else o for o in options]
    if value is None:
        value = values[0]
    if value not in values:
        raise ValueError(f"dropdown {description!r}: value {value!r} is not one of {values}")
    w = _w()
    return w.Dropdown(options=options, value=value, description=description, style=_STYLE, layout=w.Layout(**_LAYOUT))


def checkbox(value: bool = False, description: str = ""):
    """A checkbox."""
    w = _w()
    return w.Checkbox(value=bool(value), description=description, style=_STYLE)


def text_box(value: str = "", description: str = ""):
    """A one-line text box; it reports its value when you press Enter or leave it (not at every keystroke)."""
    if not isinstance(value, str):
        raise TypeError(f"text_box {description!r}: value must be a string, got {type(value).__name__}")
    w = _w()
    return w.Text(value=value, description=description, continuous_update=False, style=_STYLE,
                  layout=w.Layout(**_LAYOUT))


def live(fn: Callable, **controls) -> None:
    """Show ``controls`` above an output area that re-runs ``fn(**values)`` whenever one changes.

    ``controls`` maps each keyword argument of ``fn`` to a widget (from the builders above) or to a
    fixed value. The output is computed once immediately with the initial values, so the cell shows
    a result even before anyone touches a control. Displays the widgets once and returns None (a
    returned widget would be shown a second time when the call ends a notebook cell).

    Static mode (``COURSE_STATIC=1``, set by ``tools/run_notebooks.py`` when it executes notebooks
    for committing): ``fn`` runs once with the initial values as ordinary output and no widget is
    displayed, so the committed notebook shows the result on GitHub and holds no widget state.

    Control-moving mode (``COURSE_MOVE_CONTROLS=1``, for the tests; ignored in static mode): after
    displaying the widgets, moves every control as a learner would, one control at a time, the others
    at their initial values: a slider to its min, its max and a value between (on its step); a
    dropdown to each other option (5 at most); a checkbox to its other state. A text box is left
    alone (no value but the author's is known to be valid). After each control it is set back, so
    the controls end at their initial values. The output area shows an exception from ``fn``
    and swallows it, so here every call of ``fn`` is watched: if ``fn`` raised at
    any value, or a move did not re-run ``fn`` with the new value, an AssertionError names the
    control, the value and the exception, and the cell (so nbval) fails. To keep a notebook fast,
    the moves fit in about :data:`MOVE_BUDGET_S` seconds, judged by the first call's time: a slow
    ``fn`` gets fewer moves per control (3, then 2, at least 1 -- the far end of its range), and once
    twice that budget is spent each control still left gets only its first move.
    """
    w = _w()
    from IPython.display import display

    if not callable(fn):
        raise TypeError(f"live: fn must be a function of the controls, got {type(fn).__name__}; "
                        "write live(my_view, x=slider(...))")
    widgets = {k: v for k, v in controls.items() if isinstance(v, w.Widget)}
    fixed = {k: v for k, v in controls.items() if not isinstance(v, w.Widget)}
    if not widgets:
        raise ValueError("live() needs at least one widget control, e.g. live(fn, x=slider(0.5, 0, 1))")
    try:
        inspect.signature(fn).bind(**controls)
    except ValueError:           # no signature (some builtins): let the call decide
        pass
    except TypeError as e:       # a control fn has no parameter for, or a parameter without a control
        raise TypeError(f"live: the controls {sorted(controls)} do not fit {getattr(fn, '__name__', 'fn')}'s "
                        f"parameters ({e}); give one control (widget or fixed value) per parameter, by name") from None

    def run(**values):
        return fn(**values, **fixed)

    if os.environ.get("COURSE_STATIC", "") not in {"", "0"}:
        names = ", ".join(f"{k}={getattr(v, 'value', v)!r}" for k, v in widgets.items())
        print(f"[static view at {names}: run the notebook to move the controls]")
        run(**{k: v.value for k, v in widgets.items()})
        return None

    moving = os.environ.get("COURSE_MOVE_CONTROLS", "") not in {"", "0"}
    watch = _Watch(run) if moving else None
    out = _serial_output(watch or run, widgets)
    display(w.VBox([w.VBox(list(widgets.values())), out]))
    if watch is not None:
        _move_controls(widgets, watch)
    return None


# A redraw of a live() output, and why it is guarded. ipykernel 7 handles some widget messages from JupyterLab 4 on a
# subshell thread (the output area, for one, reports its contents back), and after every widget message the ``comm``
# package fires IPython's ``post_execute`` event, on which pyplot redraws every open figure and the inline backend
# shows and closes them. So while ``fn`` drew its figure on one thread, a message on another thread drew the same
# figure at the same time, or closed it before ``fn`` showed it: the learner saw a figure drawn almost blank, or none
# (found by tests/test_browser.py on 01.3 and 03.2). Each redraw holds this lock, and so do matplotlib's post_execute
# hooks (:func:`_guard_figure_hooks`): they run before or after a redraw, never during one. Matplotlib registers those
# hooks only when the kernel draws its first figure, which may be fn's own first redraw (02.3), so every redraw
# guards them again, before and after fn.
_REDRAW = threading.RLock()


class _WaitsForRedraw:
    """A post_execute hook that runs holding :data:`_REDRAW`. It compares equal to the hook it wraps, so matplotlib
    can still find and unregister its own hook (IPython finds a callback with ``==``)."""

    def __init__(self, hook: Callable):
        self.hook = hook
        functools.update_wrapper(self, hook)

    def __call__(self, *args, **kwargs):
        with _REDRAW:
            return self.hook(*args, **kwargs)

    def __eq__(self, other):
        return self.hook == (other.hook if isinstance(other, _WaitsForRedraw) else other)

    def __hash__(self):
        return hash(self.hook)


def _guard_figure_hooks() -> None:
    """Make matplotlib's post_execute hooks (pyplot's redraw, the inline backend's flush) wait for a redraw in progress:
    each is replaced in place by a :class:`_WaitsForRedraw`. Idempotent."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    hooks = getattr(getattr(shell, "events", None), "callbacks", {}).get("post_execute")
    for i, hook in enumerate(hooks or []):
        module = getattr(hook, "__module__", None) or ""
        if not isinstance(hook, _WaitsForRedraw) and module.split(".")[0] in ("matplotlib", "matplotlib_inline"):
            hooks[i] = _WaitsForRedraw(hook)


def _serial_output(fn: Callable, widgets: dict):
    """Like ``ipywidgets.interactive_output(fn, widgets)`` (7.7 and 8), with each redraw guarded (see above).

    A redraw: show figures left open elsewhere, clear the output area when the next output arrives, call ``fn``
    with the controls' values, show the figures ``fn`` left open (a ``fn`` that calls ``plt.show()`` leaves none).
    """
    w = _w()
    from IPython.display import clear_output
    from ipywidgets.widgets.interaction import show_inline_matplotlib_plots
    out = w.Output()

    def redraw(change=None):
        with _REDRAW:
            _guard_figure_hooks()
            values = {k: c.value for k, c in widgets.items()}
            show_inline_matplotlib_plots()
            with out:
                clear_output(wait=True)
                fn(**values)
                plt = sys.modules.get("matplotlib.pyplot")      # imported by fn or the notebook, if it draws
                if plt is not None and plt.get_fignums() and "inline" in plt.get_backend():
                    plt.show()
            _guard_figure_hooks()       # matplotlib registers its hooks at a kernel's first figure: maybe fn's, just now

    for control in widgets.values():
        control.observe(redraw, "value")
    redraw()
    return out


# ---- control-moving mode (COURSE_MOVE_CONTROLS=1): the tests move every control of every notebook ----

MOVE_BUDGET_S = 2.0     # about how long the moves of one live() call may take (estimated from fn's first call)
_MAX_OPTIONS = 5        # dropdown options tried per control when fn is fast


class _Watch:
    """Wraps fn for the live output: records each call's values, time and exception.

    An exception is recorded and not re-raised, so :func:`_move_controls` can name the control and
    value that caused it in one clear error (the Output widget would print it and carry on).
    """

    def __init__(self, fn: Callable):
        self.fn, self.calls = fn, []          # calls: (values, seconds, exception or None)

    def __call__(self, **values):
        t0 = time.perf_counter()
        error = None
        try:
            self.fn(**values)
        except Exception as e:              # noqa: BLE001 -- reported by _move_controls
            error = e
            print(f"[moving the controls: {type(e).__name__}: {e}]")
        self.calls.append((values, time.perf_counter() - t0, error))


def _on_step(lo, step, k: int):
    """The k-th value on a slider's step from ``lo`` (12 significant digits: no 0.30000000000000004)."""
    v = lo + k * step
    return v if _whole(lo) and _whole(step) else float(f"{v:.12g}")


def _targets(control, cap: int) -> list:
    """At most ``cap`` valid values to move ``control`` to, none equal to its current value, the most telling first.

    Sliders: the far end of the range (max, or min when it starts at max), the other end, then the middle, all on
    the step (a value off the step is one a learner cannot reach). Dropdowns: the other options, spread over the
    list when there are more than ``cap``. Checkboxes: the other state. Anything else (a text box): nothing.
    """
    w = _w()
    now = control.value
    if isinstance(control, w.FloatLogSlider) or (all(hasattr(control, a) for a in ("min", "max", "step"))
                                                 and _real(now)):
        step = control.step or (control.max - control.min) / 100
        n = int(math.floor((control.max - control.min) / step + 1e-9))   # the last step that stays inside the range
        ends = [_on_step(control.min, step, k) for k in (n, 0, n // 2)]
        values = [control.base ** e for e in ends] if isinstance(control, w.FloatLogSlider) else ends
    elif hasattr(control, "_options_values"):
        values = [v for v in control._options_values if v != now]
        if len(values) > cap:
            picks = [0, len(values) - 1] + [round(i * (len(values) - 1) / (cap - 1)) for i in range(1, cap - 1)]
            values = [values[i] for i in dict.fromkeys(picks)]
    elif isinstance(now, bool):
        values = [not now]
    else:
        values = []
    distinct = []
    for v in values:
        if v != now and v not in distinct:
            distinct.append(v)
    return distinct[:cap]


def _move_controls(widgets: dict, watch: _Watch) -> None:
    """Move each control through a few valid values, one at a time, then back; raise if fn failed or did not re-run."""
    first = watch.calls[0] if watch.calls else None
    problems = []
    if first is not None and first[2] is not None:
        problems.append((f"the initial values {first[0]}", first[2]))
    per_call = first[1] if first is not None else 0.0
    plans = {name: _targets(c, _MAX_OPTIONS) for name, c in widgets.items()}
    for cap in (3, 2, 1):                           # fewer moves per control while the estimate is over budget
        calls = sum(len(v) + bool(v) for v in plans.values())    # the moves, and one call to set each control back
        if per_call * calls <= MOVE_BUDGET_S:
            break
        plans = {name: _targets(c, cap) for name, c in widgets.items()}
    deadline = time.perf_counter() + 2 * MOVE_BUDGET_S     # fn may be slower at the far end than at the start
    for name, values in plans.items():
        control = widgets[name]
        initial = control.value
        for i, v in enumerate([*values, initial] if values else []):
            if 0 < i < len(values) and time.perf_counter() > deadline:
                continue                            # out of time: only the first move, then back
            before, old = len(watch.calls), control.value
            try:
                control.value = v
            except Exception as e:                  # noqa: BLE001 -- the widget refused the value
                problems.append((f"{name}={v!r}", e))
                continue
            if control.value == old:                # the widget rounded v to where it was: no move, no re-run
                continue
            if len(watch.calls) == before:
                problems.append((f"{name}={v!r}", RuntimeError("setting the control did not re-run the function")))
                continue
            values_seen, _, error = watch.calls[-1]
            if values_seen.get(name) != control.value:
                problems.append((f"{name}={v!r}", RuntimeError(f"the function re-ran with {name}="
                                                               f"{values_seen.get(name)!r}, not the new value")))
            if error is not None:
                problems.append((f"{name}={v!r}", error))
    if problems:
        lines = "\n".join(f"  at {where}: {type(e).__name__}: {e}" for where, e in problems)
        raise AssertionError(f"live(): moving the controls (COURSE_MOVE_CONTROLS=1) found {len(problems)} "
                             f"problem(s):\n{lines}") from problems[0][1]
