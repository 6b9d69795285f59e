"""helpers.tasks.composed_experts_task / composed_experts_batch against a per-sample brute-force sum of SwiGLU atoms."""
import pytest
import torch
import torch.nn.functional as F

from helpers.tasks import composed_experts_batch, composed_experts_task


def test_target_is_the_sum_of_the_class_atoms():
    task = composed_experts_task(n_classes=5, n_atoms=6, atoms_per_class=3, dim=4, atom_width=2, seed=1)
    x, y, k = composed_experts_batch(task, 7, torch.Generator().manual_seed(3))
    assert x.shape == (7, 4) and y.shape == (7, 4) and k.shape == (7,)
    for i in range(7):
        want = torch.zeros(4)
        for j in task["subsets"][k[i]].tolist():
            want += task["w2"][j] @ (F.silu(task["w1"][j] @ x[i]) * (task["w3"][j] @ x[i]))
        torch.testing.assert_close(y[i], want, rtol=1e-5, atol=1e-5)


def test_subsets_distinct_and_seeded():
    a = composed_experts_task(n_classes=8, n_atoms=10, atoms_per_class=4, seed=0)
    b = composed_experts_task(n_classes=8, n_atoms=10, atoms_per_class=4, seed=0)
    assert all(len(set(row.tolist())) == 4 for row in a["subsets"])
    assert int(a["subsets"].max()) < 10
    assert all(torch.equal(a[key], b[key]) for key in a)
    xa, ya, _ = composed_experts_batch(a, 5, torch.Generator().manual_seed(0))
    xb, yb, _ = composed_experts_batch(b, 5, torch.Generator().manual_seed(0))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_bad_inputs():
    with pytest.raises(ValueError, match="atoms_per_class"):
        composed_experts_task(n_atoms=3, atoms_per_class=4)
    with pytest.raises(ValueError, match="n_classes"):
        composed_experts_task(n_classes=0)
    with pytest.raises(ValueError, match="composed_experts_task"):
        composed_experts_batch({"centres": torch.zeros(2, 2)}, 3)
    with pytest.raises(ValueError, match="n must be"):
        composed_experts_batch(composed_experts_task(), 0)
