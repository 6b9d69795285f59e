"""Widgets that work on ipywidgets 7.7.1 (Colab) and 8 (JupyterLab 4).

Only core widgets and ``interactive_output`` are used: both exist, with the same arguments, in both
versions. The logic a widget explores always lives in a pure function elsewhere in ``helpers``,
tested without any widget; :func:`live` only wires controls to that function.
"""
from __future__ import annotations

import inspect
import math
import numbers
import os
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

    out = w.interactive_output(run, widgets)
    display(w.VBox([w.VBox(list(widgets.values())), out]))
    return None
