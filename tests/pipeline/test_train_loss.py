"""One-process tests of the training arithmetic (docs/algorithm.md "Training"): loss terms, R1, lazy regularisation,
EMA, blur, ADA wiring, gradient sanitising. No Ray."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.training.ema import ema_beta, update_ema
from pipeline.training.trainer import Trainer
from pipeline.training.loss import StyleGAN2Loss, blur_filter, blur_sigma
from tests.pipeline.train_toys import ToyD, ToyG, toy_config


def _grads(module):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in module.parameters()]


def _data(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    real = torch.rand([n, 3, 16, 16], generator=g) * 2 - 1
    return real, torch.zeros([n, 0]), torch.randn([n, 8], generator=g), torch.zeros([n, 0])


def _nets(seed=0):
    torch.manual_seed(seed)
    return ToyG(), ToyD()


def test_gmain_is_nonsaturating_loss_into_G_only():
    G, D = _nets()
    real, rc, z, c = _data()
    loss = StyleGAN2Loss(G, D, r1_gamma=1.0)
    G.requires_grad_(True)
    D.requires_grad_(False)
    stats = loss.accumulate_gradients("Gmain", real, rc, z, c, gain=1.0, cur_nimg=0)
    got = _grads(G)
    # Direct: −log σ(D(G(z))) averaged over the chunk.
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    G2.zero_grad(set_to_none=True)
    logits = D2(G2(z, c), c)
    (-torch.log(torch.sigmoid(logits))).mean().backward()
    for a, b in zip(got, _grads(G2)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert all(p.grad is None for p in D.parameters())
    torch.testing.assert_close(stats["G_loss"], F.softplus(-logits.detach()))
    assert G.mapping.ema_updates == 0  # only Dmain updates EMAs


def test_dmain_fake_plus_real_and_only_pass_updating_emas():
    G, D = _nets()
    real, rc, z, c = _data()
    loss = StyleGAN2Loss(G, D, r1_gamma=1.0)
    D.requires_grad_(True)
    stats = loss.accumulate_gradients("Dmain", real, rc, z, c, gain=1.0, cur_nimg=0)
    assert G.mapping.ema_updates == 1
    got = _grads(D)
    D2 = copy.deepcopy(D)
    D2.zero_grad(set_to_none=True)
    with torch.no_grad():
        fake = G(z, c)
    (F.softplus(D2(fake, c)).mean() + (-torch.log(torch.sigmoid(D2(real, rc)))).mean()).backward()
    for a, b in zip(got, _grads(D2)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert all(p.grad is None for p in G.parameters())
    assert set(stats) >= {"D_loss_fake", "D_loss_real", "signs_real", "logits_real"}
    torch.testing.assert_close(stats["signs_real"], stats["logits_real"].sign())


def test_r1_value_for_linear_D():
    """D(x) = <w, x> + b has ∂D/∂x = w for every sample: penalty = Σ w², loss grad = gain·γ·w."""
    G, _ = _nets()

    class LinearD(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(3, 16, 16))
            self.b = torch.nn.Parameter(torch.zeros([]))

        def forward(self, img, c):
            return (img * self.w).sum([1, 2, 3]).unsqueeze(1) + self.b

    D = LinearD()
    real, rc, z, c = _data()
    gamma, gain = 0.7, 16.0
    stats = StyleGAN2Loss(G, D, r1_gamma=gamma).accumulate_gradients("Dreg", real, rc, z, c, gain, 0)
    w = D.w.detach()
    torch.testing.assert_close(stats["r1_penalty"], w.square().sum().expand(4))
    torch.testing.assert_close(D.w.grad, gain * gamma * w)
    assert D.b.grad is None or float(D.b.grad.abs()) == 0


def test_dreg_matches_double_backward():
    G, D = _nets()
    real, rc, z, c = _data()
    gamma = 2.0
    D.requires_grad_(True)
    StyleGAN2Loss(G, D, r1_gamma=gamma).accumulate_gradients("Dreg", real, rc, z, c, gain=16.0, cur_nimg=0)
    got = _grads(D)
    D2 = copy.deepcopy(D)
    D2.zero_grad(set_to_none=True)
    x = real.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(D2(x, rc).sum(), x, create_graph=True)
    (g.square().sum([1, 2, 3]) * gamma / 2).mean().mul(16.0).backward()
    for a, b in zip(got, _grads(D2)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_blur_sigma_schedule_and_filter():
    assert blur_sigma(0, 10, 200) == 10
    assert blur_sigma(100_000, 10, 200) == pytest.approx(5)
    assert blur_sigma(200_000, 10, 200) == 0 and blur_sigma(300_000, 10, 200) == 0
    assert blur_sigma(0, 10, 0) == 0  # fade 0 = no blur
    f = blur_filter(10.0)
    assert f.shape == (61,) and float(f.sum()) == pytest.approx(1)
    assert float(f[30 + 10] / f[30]) == pytest.approx(0.5)  # σ is the half width at half maximum
    assert blur_filter(0.3) is None and blur_filter(1 / 3 + 1e-6).shape == (3,)


def test_run_D_blurs_with_zero_padded_separable_filter():
    _, D = _nets()
    seen = {}

    def spy(img, c):
        seen["img"] = img
        return D(img, c)

    real, rc, _, _ = _data()
    StyleGAN2Loss(None, spy).run_D(real, rc, blur_sigma=1.5)
    f = blur_filter(1.5)
    k = f.numel()
    x = real.reshape(-1, 1, 16, 16)
    x = F.conv2d(x, f.flip(0).view(1, 1, 1, k), padding=(0, k // 2))
    x = F.conv2d(x, f.flip(0).view(1, 1, k, 1), padding=(k // 2, 0))
    torch.testing.assert_close(seen["img"], x.reshape(real.shape), rtol=1e-5, atol=1e-6)


def test_lazy_regularisation_optimizer_settings_and_phase_schedule():
    G, D = _nets()
    t = Trainer(toy_config(), G, D)
    assert t.G_opt.param_groups[0]["lr"] == pytest.approx(0.0025)
    assert t.G_opt.param_groups[0]["betas"] == (0.0, 0.99)
    assert t.D_opt.param_groups[0]["lr"] == pytest.approx(0.002 * 16 / 17)  # 0.0018824
    b1, b2 = t.D_opt.param_groups[0]["betas"]
    assert b1 == 0 and b2 == pytest.approx(0.99 ** (16 / 17))  # 0.990585
    names = []
    for idx in range(33):
        t.batch_idx = idx
        names.append([p[0] for p in t.phases()])
    assert names[0] == ["Gmain", "Dmain", "Dreg"] and names[16] == names[32] == names[0]
    assert all(n == ["Gmain", "Dmain"] for i, n in enumerate(names) if i % 16)
    assert [p[3] for p in t.phases()][-1] == 16.0 and t.phases()[-1][0] == "Dreg"


def test_ema_beta_formula_and_rampup():
    # Ramp-up: at nimg 0 β = 0 (copy); later capped by nimg·0.05.
    assert ema_beta(32, 10, 0, 0.05) == 0
    assert ema_beta(32, 10, 1000, 0.05) == pytest.approx(0.5 ** (32 / 50))
    assert ema_beta(32, 10, 10**7, 0.05) == pytest.approx(0.5 ** (32 / 10000))
    assert ema_beta(32, 10, 0, None) == pytest.approx(0.5 ** (32 / 10000))  # --resume: no ramp-up


def test_update_ema_lerps_params_and_copies_buffers():
    G, _ = _nets(0)
    G_ema = copy.deepcopy(G)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(1.0)
        G.mapping.w_avg.fill_(3.0)
    before = [p.clone() for p in G_ema.parameters()]
    update_ema(G_ema, G, 0.25)
    for pe, p, b in zip(G_ema.parameters(), G.parameters(), before):
        torch.testing.assert_close(pe, 0.25 * b + 0.75 * p)
    assert torch.all(G_ema.mapping.w_avg == 3.0)


def test_step_counts_images_and_updates_both_nets_and_ema():
    G, D = _nets()
    t = Trainer(toy_config(), G, D)
    g0, d0 = [p.clone() for p in G.parameters()], [p.clone() for p in D.parameters()]
    img = torch.randint(0, 256, [8, 3, 16, 16], dtype=torch.uint8)
    t.step(img, torch.zeros([8, 0]))
    assert t.cur_nimg == 8 and t.batch_idx == 1
    assert all(not torch.equal(a, b) for a, b in zip(g0, G.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(d0, D.parameters()))
    for pe, p in zip(t.G_ema.parameters(), G.parameters()):  # first step: β = 0 → G_ema = G
        torch.testing.assert_close(pe, p)
    stats = t.tick_stats()
    assert math.isfinite(stats["G_loss"]) and math.isfinite(stats["r1_penalty"])


def test_gradient_sanitising():
    G, D = _nets()
    t = Trainer(toy_config(), G, D)
    p = next(D.parameters())
    p.grad = torch.zeros_like(p)
    p.grad.view(-1)[:3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    t.sync_grads(D)
    assert p.grad.view(-1)[:3].tolist() == [0.0, 1e5, -1e5]


def _const_D(value):
    class ConstD(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros([]))

        def forward(self, img, c):
            return (img.mean([1, 2, 3]) * self.w).unsqueeze(1) * 0 + value + self.w

    return ConstD()


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_ada_p_follows_sign_of_real_logits(sign):
    """Reals always judged real (sign +1 > target 0.6): p rises by batch·interval/(ada_kimg·1000) per
    adjustment; always judged fake: p stays at its floor 0 (docs/algorithm.md "ADA")."""
    G, _ = _nets()
    cfg = toy_config(aug={"mode": "ada", "ada_kimg": 1})
    t = Trainer(cfg, G, _const_D(sign * 5))
    assert t.augment_pipe is not None and t.ada_p == 0
    img = torch.randint(0, 256, [8, 3, 16, 16], dtype=torch.uint8)
    p_after = []
    for _ in range(2 * cfg.aug.interval + 1):
        t.step(img, torch.zeros([8, 0]))
        p_after.append((t.batch_idx, t.ada_p))
    step = 8 * 4 / 1000
    # p moves after steps 4 and 8 (batch_idx after the step, as the official loop counts), not after step 1.
    expected = {i: (i // 4) * step if sign > 0 else 0.0 for i in range(1, 10)}
    assert [(i, pytest.approx(expected[i])) for i, _ in p_after] == p_after
    assert float(t.augment_pipe.p) == pytest.approx(expected[9])
