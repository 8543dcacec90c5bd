import math

import numpy as np
import pytest
import torch

from fplib.losses import nt_xent
from fplib.optim import Lamb, make_optimizer, warmup_cosine


def test_nt_xent_hand_computed():
    # two pairs in 2-D; anchors a1=(1,0), a2=(0,1); replicas b1=(1,0), b2=(0.6,0.8); tau = 0.5
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    tau = 0.5
    items = [a[0], a[1], b[0], b[1]]
    partner = {0: 2, 1: 3, 2: 0, 3: 1}
    total = 0.0
    for i in range(4):
        sims = {j: float(items[i] @ items[j]) / tau for j in range(4) if j != i}
        total += -sims[partner[i]] + math.log(sum(math.exp(s) for s in sims.values()))
    expected = total / 4
    assert float(nt_xent(a, b, temperature=tau)) == pytest.approx(expected, rel=1e-6)
    # symmetric in the two views
    assert float(nt_xent(b, a, temperature=tau)) == pytest.approx(expected, rel=1e-6)


def test_nt_xent_prefers_matching_pairs():
    z = torch.nn.functional.normalize(torch.randn(16, 8), dim=1)
    good = nt_xent(z, z)
    bad = nt_xent(z, z.roll(1, dims=0))
    assert good < bad
    with pytest.raises(ValueError, match="same shape"):
        nt_xent(z, z[:4])


def _lamb_reference(w, grads, lr, b1=0.9, b2=0.999, eps=1e-6, wd=0.01):
    """The update of You et al. (2019), Algorithm 2, with bias correction, in NumPy."""
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        r = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps) + wd * w
        trust = np.linalg.norm(w) / np.linalg.norm(r)
        w = w - lr * trust * r
    return w


def test_lamb_matches_the_reference_update():
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((4, 3))
    grads = [rng.standard_normal((4, 3)) for _ in range(3)]
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = Lamb([p], lr=0.01, weight_decay=0.01)
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(p.detach().numpy(), _lamb_reference(w0, grads, 0.01), rtol=1e-10, atol=1e-12)


def test_make_optimizer_names_and_decay_groups():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    assert isinstance(make_optimizer("Adam", model, 1e-3), torch.optim.Adam)
    opt = make_optimizer("lamb", model, 1e-3, weight_decay=0.1)
    assert isinstance(opt, Lamb)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert len(opt.param_groups[0]["params"]) == 1  # only the Linear weight decays
    with pytest.raises(ValueError, match="Adam or Lamb"):
        make_optimizer("sgd", model, 1e-3)


def test_warmup_then_cosine_over_the_real_run_length():
    f = warmup_cosine(total_steps=100, warmup_steps=10)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5, abs=0.01)
    assert f(99) < 0.01 and f(100) == pytest.approx(0.0)
    values = [f(s) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:])), "never rises again after the warm-up"
