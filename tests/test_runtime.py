
import pytest
import torch

from helpers import runtime


def test_device_is_cuda_when_present_else_cpu():
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert runtime.get_device().type == want
    assert runtime.get_device("cpu").type == "cpu"


def test_device_rejects_unknown_and_unavailable(monkeypatch):
    with pytest.raises(ValueError, match="unknown device"):
        runtime.get_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            runtime.get_device("cuda")
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert runtime.get_device().type == "cpu"


def test_seed_everything_makes_runs_repeatable():
    def draw():
        g = runtime.seed_everything(7)
        return torch.randn(5), torch.randn(3, generator=g), torch.nn.Linear(4, 4).weight.detach().clone()

    a, b = draw(), draw()
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(draw()[0], (runtime.seed_everything(8), torch.randn(5))[1])


def test_seed_rejects_bad_seed():
    with pytest.raises(ValueError):
        runtime.seed_everything(-1)


def test_data_dir_and_missing_data(monkeypatch, tmp_path):
    assert (runtime.repo_root() / "helpers").is_dir()
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="COURSE_DATA"):
        runtime.data_dir()
    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    assert runtime.data_dir() == tmp_path


def test_progress_passes_items_through(monkeypatch):
    monkeypatch.setenv("COURSE_NO_PROGRESS", "1")
    assert list(runtime.progress(range(4), desc="x")) == [0, 1, 2, 3]
    assert runtime.on_colab() is False


def test_fast_path_switch_restores_state():
    assert runtime.fast_path() is True
    with runtime.use_fast_path(False):
        assert runtime.fast_path() is False
    assert runtime.fast_path() is True
