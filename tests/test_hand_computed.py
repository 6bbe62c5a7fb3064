"""Values computed by hand, pinning details that invariance tests cannot see: Nesterov's
look-ahead sign at mu = 0.5 (at mu = 0 it is heavy-ball whatever the sign), and the rotary
embedding's angles (its base: any base keeps q.k a function of the relative position)."""
import math

import torch

from graphformer.nn import Nesterov
from graphformer.nn.conv.attention import rotary_embedding


def test_one_nesterov_step_at_mu_one_half():
    method = Nesterov(1, 2, mu=0.5, beta=0.5, gamma=2.0, learn=(), velocity_norm=False)
    x = torch.tensor([[1.0, 2.0]])
    v = torch.tensor([[2.0, -2.0]])
    # look-ahead x + mu v = [2, 1]; d(p) = p^2 = [4, 1];
    # v <- beta v + gamma d = [1, -1] + [8, 2] = [9, 1]; x <- x + v = [10, 3]
    x1, v1 = method.step(0, x, v, lambda p: p ** 2)
    assert torch.equal(v1, torch.tensor([[9.0, 1.0]]))
    assert torch.equal(x1, torch.tensor([[10.0, 3.0]]))
    # (the look-ahead x - mu v = [0, 3] would give v = [1, 17], x = [2, 19])


def test_rotary_angles_by_hand():
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]])  # [N=1, H=1, d=6]
    p = 7
    out = rotary_embedding(x, torch.tensor([p]))[0, 0]
    expected = []
    for m in range(3):  # pair (2m, 2m+1) turns by p * 10000^(-2m/6)
        angle = p * 10000.0 ** (-2 * m / 6)
        a, b = x[0, 0, 2 * m].item(), x[0, 0, 2 * m + 1].item()
        expected += [a * math.cos(angle) - b * math.sin(angle),
                     a * math.sin(angle) + b * math.cos(angle)]
    torch.testing.assert_close(out, torch.tensor(expected), atol=1e-5, rtol=1e-5)
    # the second pair at p = 7: angle 7 * 10000^(-1/3) = 0.3249 rad (base 1000: 0.7)
    assert math.isclose(7 * 10000.0 ** (-1 / 3), 0.32491, abs_tol=1e-5)
    c, s = math.cos(0.32491), math.sin(0.32491)
    assert math.isclose(out[2].item(), 3 * c - 4 * s, abs_tol=1e-4)


def test_fused_momentum_update_gradients():
    from graphformer.nn.dynamics import axpby
    a, b = torch.tensor(0.3, dtype=torch.double), torch.tensor(-1.7, dtype=torch.double)
    x, y = torch.randn(5, 3, dtype=torch.double), torch.randn(5, 3, dtype=torch.double)
    for t in (a, b, x, y):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(axpby, (a, x, b, y))
    assert torch.autograd.gradcheck(lambda x, b, y: axpby(None, x, b, y), (x, b, y))
    torch.testing.assert_close(axpby(a, x, b, y), a * x + b * y)


def test_fused_momentum_update_with_a_bf16_direction():
    # under autocast an oracle's output is bf16 while the velocity stays float32: the
    # backward's dot products must take the gradient's dtype (it raised a dtype error)
    from graphformer.nn.dynamics import axpby
    a, b = torch.tensor(0.3, requires_grad=True), torch.tensor(-1.7, requires_grad=True)
    x = torch.randn(5, 3, requires_grad=True)
    y = torch.randn(5, 3).to(torch.bfloat16).requires_grad_(True)
    axpby(a, x, b, y).square().sum().backward()
    grads = [t.grad.clone() for t in (a, x, b, y)]
    for t in (a, x, b, y):
        t.grad = None
    (a * x + b * y.float()).square().sum().backward()
    for got, t in zip(grads, (a, x, b, y)):
        assert got.dtype == t.dtype
        torch.testing.assert_close(got, t.grad, atol=1e-2, rtol=1e-2)
    ga = grads[0]
    assert torch.isfinite(ga) and ga.dim() == 0
