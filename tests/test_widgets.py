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
