"""The StyleGAN2 loss used unchanged by StyleGAN3 (docs/algorithm.md "StyleGAN3 training at a glance", "Training phases", "Loss").

Non-saturating logistic loss for G and D, lazy R1 on reals, an optional Gaussian-like blur of every
D input that fades out (config R) and the augmentation pipe applied to every D input. No path-length
regularisation, no style mixing (both off for StyleGAN3, docs/algorithm.md "StyleGAN3 training at a glance").

Phases (docs/algorithm.md "Training phases"): "Gmain" (train G), "Dmain" (train D on fakes and reals), "Dreg" (R1, every
`d_reg_interval` steps, loss multiplied by the interval). Each call handles one chunk of a phase and
backpropagates `loss.mean() * gain`, so gradients accumulate as a sum of chunk means (docs/algorithm.md "Training phases").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ops import filter2d

PHASES = ("Gmain", "Dmain", "Dreg")


def blur_sigma(cur_nimg: int, blur_init_sigma: float, blur_fade_kimg: float) -> float:
    """D-input blur in px at `cur_nimg` images: max(1 − nimg/(fade_kimg·1000), 0)·init; 0 if fade is 0 (docs/algorithm.md "Loss")."""
    if blur_fade_kimg <= 0:
        return 0.0
    return max(1.0 - cur_nimg / (blur_fade_kimg * 1e3), 0.0) * blur_init_sigma


def blur_filter(sigma: float, device: torch.device | str = "cpu") -> torch.Tensor | None:
    """1-D separable blur taps f(x) = 2^(−(x/σ)²), x ∈ [−⌊3σ⌋, ⌊3σ⌋], normalised to sum 1 (docs/algorithm.md "Loss").

    σ is the half width at half maximum (f(±σ) = 1/2), not a Gaussian std. Returns None when
    ⌊3σ⌋ = 0 (no blur). Shape [2⌊3σ⌋+1], float32.
    """
    size = int(math.floor(sigma * 3))
    if size <= 0:
        return None
    x = torch.arange(-size, size + 1, device=device, dtype=torch.float32)
    f = torch.exp2(-(x / sigma).square())
    return f / f.sum()


class StyleGAN2Loss:
    """Loss phases for one (G, D) pair.

    G: mapping(z [N, z_dim], c [N, c_dim], update_emas) -> ws; synthesis(ws, update_emas) -> img
       [N, C, H, W] float32 ~[-1, 1].  D(img, c) -> logits [N, 1] float32.
    augment_pipe: nn.Module applied to every D input (None = no augmentation).
    r1_gamma: R1 weight γ; the penalty is γ/2 · Σ_{C,H,W} (∂ΣD/∂x)² per sample.
    """

    def __init__(self, G, D, augment_pipe=None, r1_gamma: float = 10.0, blur_init_sigma: float = 0.0,
                 blur_fade_kimg: float = 0.0):
        self.G, self.D, self.augment_pipe = G, D, augment_pipe
        self.r1_gamma = float(r1_gamma)
        self.blur_init_sigma = float(blur_init_sigma)
        self.blur_fade_kimg = float(blur_fade_kimg)

    def run_G(self, z: torch.Tensor, c: torch.Tensor, update_emas: bool = False) -> torch.Tensor:
        ws = self.G.mapping(z, c, update_emas=update_emas)
        return self.G.synthesis(ws, update_emas=update_emas)

    def run_D(self, img: torch.Tensor, c: torch.Tensor, blur_sigma: float = 0.0) -> torch.Tensor:
        """Blur (if σ gives ≥ 1 tap each side) → augment → D. Returns logits [N, 1]."""
        f = blur_filter(blur_sigma, img.device)
        if f is not None:
            img = filter2d(img, f)  # same-size output, zero padding (docs/algorithm.md "Loss")
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img, c)

    def accumulate_gradients(self, phase: str, real_img: torch.Tensor, real_c: torch.Tensor,
                             gen_z: torch.Tensor, gen_c: torch.Tensor, gain: float,
                             cur_nimg: int) -> dict[str, torch.Tensor]:
        """Forward + backward of one chunk of `phase`; gradients accumulate into the trained module.

        real_img: [N, C, H, W] float32 in [-1, 1]; real_c: [N, c_dim]; gen_z: [N, z_dim]; gen_c: [N, c_dim].
        gain: multiplier of the chunk-mean loss (the lazy-regularisation interval for Dreg, else 1).
        Returns detached per-sample statistics: 'G_loss', 'D_loss_fake', 'D_loss_real', 'r1_penalty',
        'logits_fake', 'logits_real', 'signs_real' (those the phase computes).
        """
        if phase not in PHASES:
            raise ValueError(f"unknown loss phase '{phase}': expected one of {PHASES}")
        sigma = blur_sigma(cur_nimg, self.blur_init_sigma, self.blur_fade_kimg)
        stats: dict[str, torch.Tensor] = {}

        if phase == "Gmain":
            # Non-saturating loss: −log sigmoid(D(G(z))) = softplus(−logits) (docs/algorithm.md "Loss").
            gen_logits = self.run_D(self.run_G(gen_z, gen_c), gen_c, sigma)
            loss = F.softplus(-gen_logits)
            loss.mean().mul(gain).backward()
            stats["G_loss"] = loss.detach()
            stats["logits_fake"] = gen_logits.detach()

        elif phase == "Dmain":
            # Fakes: the only G pass that updates w_avg and the magnitude EMAs (docs/algorithm.md "Loss").
            with torch.no_grad():
                gen_img = self.run_G(gen_z, gen_c, update_emas=True)
            gen_logits = self.run_D(gen_img, gen_c, sigma)
            loss_fake = F.softplus(gen_logits)
            loss_fake.mean().mul(gain).backward()
            real_logits = self.run_D(real_img.detach(), real_c, sigma)
            loss_real = F.softplus(-real_logits)
            loss_real.mean().mul(gain).backward()
            stats.update(D_loss_fake=loss_fake.detach(), D_loss_real=loss_real.detach(),
                         logits_fake=gen_logits.detach(), logits_real=real_logits.detach(),
                         signs_real=real_logits.detach().sign())

        else:  # Dreg
            # R1 w.r.t. the un-blurred, un-augmented reals (docs/algorithm.md "Loss").
            real = real_img.detach().requires_grad_(True)
            real_logits = self.run_D(real, real_c, sigma)
            (grads,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True, only_inputs=True)
            penalty = grads.square().sum(dim=[1, 2, 3])
            loss = penalty * (self.r1_gamma / 2)
            loss.mean().mul(gain).backward()
            stats.update(r1_penalty=penalty.detach(), logits_real=real_logits.detach(),
                         signs_real=real_logits.detach().sign())
        return stats
