"""Differentiable adaptive discriminator augmentation ("ADA") pipeline, docs/algorithm.md "ADA".

Written from Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data",
Appendix B, and docs/algorithm.md "ADA". The "bgc" preset is the pipeline StyleGAN3's train.py uses:
pixel blitting (x-flip, 90° rotations, integer translation), general geometric transforms
(isotropic scale, pre/post rotation, anisotropic scale, fractional translation) and colour
transforms (brightness, contrast, luma flip, hue rotation, saturation).

How one call works (shapes for ``images [N, C, H, W]``):

1. Draw, per sample and per transform, whether it is applied (probability ``p · multiplier``) and
   its parameter; a transform that is not applied contributes the identity.
2. Geometric transforms are composed into one per-sample 3×3 matrix acting on centred pixel
   coordinates. Its pixel-blitting part (flips, 90° rotations, integer shifts) maps pixel centres
   onto pixel centres, so it is executed exactly, as an index gather from the image extended by
   reflection (the paper's reflect padding); the rest is executed in ONE resampling pass: 2×
   upsampling with the sym6 wavelet low-pass filter, bilinear ``grid_sample``, 2× downsampling with
   the same filter. Splitting the matrix this way is mathematically the same transform as sampling
   the reflect-padded image through the composed matrix, and it makes the blits lossless (sym6 is
   not symmetric, so a mirrored upsampled image is not the upsampled mirror image). The resampling
   pass always runs, also at p = 0, where it is the identity to ~1e-5 because sym6 is an orthogonal
   wavelet: downsampling with its low-pass filter undoes upsampling with it (docs/algorithm.md "ADA").
3. Colour transforms are composed into one per-sample 4×4 homogeneous matrix on RGB (luma axis
   ``v = [1, 1, 1] / sqrt(3)``) and applied to every pixel.

Channels: 3 (RGB), 4 (RGBA: colour transforms touch RGB only; alpha is transformed geometrically)
and 1 (greyscale: treated as R = G = B; brightness, contrast and luma flip act on it, hue and
saturation move colour orthogonally to the luma axis and leave grey unchanged). Other channel
counts raise ``ValueError``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ops import downsample2d, setup_filter, upsample2d

__all__ = ["AugmentPipe", "SYM6_LOWPASS"]

# Symlet-6 ("sym6") wavelet decomposition low-pass filter, 12 taps, as tabulated by PyWavelets
# (`pywt.Wavelet('sym6').dec_lo`). Orthonormal: sum = sqrt(2), sum of squares = 1 and
# sum_k h[k]·h[k+2n] = 0 for n != 0, which is what makes the 2× up/down round trip the identity.
SYM6_LOWPASS = (
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057,
    -0.048311742585633, 0.4910559419267466, 0.787641141030194,
    0.3379294217276218, -0.07263752278646252, -0.021060292512300564,
    0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
)

# Margins of the resampling pass, in pixels of the original image. Output side: the 12-tap
# downsampling filter reaches 6 upsampled = 3 original pixels beyond the output. Input side: the
# 12-tap upsampling filter is exact only 3 pixels inside the padded image, plus 1 for bilinear.
_MARGIN_OUT = 3
_MARGIN_IN = 4

# sym6 is not linear-phase: its DC group delay (tap centroid, 5.098) is not the 5.5 that
# upsample2d's padding centres a 12-tap filter on. In pixels of the original image (half a sample
# of the 2x grid per tap), the offset the resampling pass compensates (see `_resample`):
_SYM6_DELAY = (5.5 - sum(i * h for i, h in enumerate(SYM6_LOWPASS)) / sum(SYM6_LOWPASS)) / 2

_TRANSFORMS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
               "brightness", "contrast", "lumaflip", "hue", "saturation")


def _translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """[N] tx, ty -> [N, 3, 3] homogeneous translation."""
    o, z = torch.ones_like(tx), torch.zeros_like(tx)
    return torch.stack([o, z, tx, z, o, ty, z, z, o], dim=-1).reshape(-1, 3, 3)


def _scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    o, z = torch.ones_like(sx), torch.zeros_like(sx)
    return torch.stack([sx, z, z, z, sy, z, z, z, o], dim=-1).reshape(-1, 3, 3)


def _rotate2d(theta: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(theta), torch.sin(theta)
    o, z = torch.ones_like(theta), torch.zeros_like(theta)
    return torch.stack([c, -s, z, s, c, z, z, z, o], dim=-1).reshape(-1, 3, 3)


def _translate3d(t: torch.Tensor) -> torch.Tensor:
    """[N] t -> [N, 4, 4] homogeneous translation by (t, t, t)."""
    m = torch.eye(4, dtype=t.dtype, device=t.device).repeat(t.shape[0], 1, 1)
    m[:, :3, 3] = t[:, None]
    return m


def _scale3d(s: torch.Tensor) -> torch.Tensor:
    m = torch.eye(4, dtype=s.dtype, device=s.device).repeat(s.shape[0], 1, 1)
    m[:, 0, 0] = m[:, 1, 1] = m[:, 2, 2] = s
    return m


def _rotate3d_about(v: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotation by ``theta`` [N] about the unit axis ``v`` [3] (Rodrigues) -> [N, 4, 4]."""
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    vx = torch.tensor([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]],
                      dtype=v.dtype, device=v.device)
    eye3 = torch.eye(3, dtype=v.dtype, device=v.device)
    r = c * eye3 + s * vx + (1 - c) * torch.outer(v, v)
    m = torch.eye(4, dtype=v.dtype, device=v.device).repeat(theta.shape[0], 1, 1)
    m[:, :3, :3] = r
    return m


def _reflect_index(idx: torch.Tensor, n: int) -> torch.Tensor:
    """Map integer pixel indices onto [0, n) by mirror reflection about the edge pixels
    (``..., 2, 1, 0, 1, 2, ...``, i.e. torch's 'reflect' mode), for any distance."""
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    m = torch.remainder(idx, period)
    return torch.where(m >= n, period - m, m)


class AugmentPipe(nn.Module):
    """ADA augmentation pipeline (docs/algorithm.md "ADA"; ADA paper Appendix B).

    Every multiplier scales the probability ``p`` with which that transform is applied to each
    sample (0 disables it; 1 = applied with probability ``p``). The strength arguments are the
    paper's distributions.

    Args:
        xflip: x-flip multiplier (mirror with probability 1/2 when applied).
        rotate90: multiplier of rotation by a uniform multiple of 90°.
        xint: multiplier of integer translation, uniform in ±``xint_max`` of the image size,
            rounded to whole pixels.
        scale: multiplier of isotropic scaling by ``2^N(0, scale_std)``.
        rotate: multiplier of arbitrary rotation, uniform in ±``rotate_max``·π; applied before and
            after anisotropic scaling, each with probability ``1 − sqrt(1 − p)`` so that at least
            one of the two happens with probability ``p``.
        aniso: multiplier of anisotropic scaling ``(s, 1/s)``, ``s = 2^N(0, aniso_std)``.
        xfrac: multiplier of fractional translation by ``N(0, xfrac_std)`` of the image size.
        brightness: multiplier of adding ``N(0, brightness_std)`` to R, G and B.
        contrast: multiplier of scaling RGB by ``2^N(0, contrast_std)``.
        lumaflip: multiplier of the Householder reflection of RGB along the luma axis (with
            probability 1/2 when applied).
        hue: multiplier of rotation about the luma axis, uniform in ±``hue_max``·π.
        saturation: multiplier of scaling the chroma (RGB minus its luma projection) by
            ``2^N(0, saturation_std)``.

    Buffer ``p``: scalar float32 tensor, the augmentation probability. Set it from outside with
    ``pipe.p.copy_(torch.as_tensor(value))`` or :meth:`set_p`; it is saved in ``state_dict()``.
    """

    def __init__(self, xflip: float = 0, rotate90: float = 0, xint: float = 0, scale: float = 0,
                 rotate: float = 0, aniso: float = 0, xfrac: float = 0, brightness: float = 0,
                 contrast: float = 0, lumaflip: float = 0, hue: float = 0, saturation: float = 0,
                 xint_max: float = 0.125, scale_std: float = 0.2, rotate_max: float = 1.0,
                 aniso_std: float = 0.2, xfrac_std: float = 0.125, brightness_std: float = 0.2,
                 contrast_std: float = 0.5, hue_max: float = 1.0, saturation_std: float = 1.0):
        super().__init__()
        self.register_buffer("p", torch.zeros([]))
        kwargs = dict(xflip=xflip, rotate90=rotate90, xint=xint, scale=scale, rotate=rotate,
                      aniso=aniso, xfrac=xfrac, brightness=brightness, contrast=contrast,
                      lumaflip=lumaflip, hue=hue, saturation=saturation, xint_max=xint_max,
                      scale_std=scale_std, rotate_max=rotate_max, aniso_std=aniso_std,
                      xfrac_std=xfrac_std, brightness_std=brightness_std,
                      contrast_std=contrast_std, hue_max=hue_max, saturation_std=saturation_std)
        for name, value in kwargs.items():
            value = float(value)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"AugmentPipe: {name}={value!r} must be a finite number >= 0")
            setattr(self, name, value)
        # Up/down-sampling filter of the resampling pass: normalised to unit DC gain (12 taps ->
        # kept 1-D and applied separably by upfirdn2d). Not persistent: it is a constant.
        self.register_buffer("Hz", setup_filter(SYM6_LOWPASS), persistent=False)

    @classmethod
    def bgc(cls, **overrides) -> "AugmentPipe":
        """The "bgc" preset of train.py (docs/algorithm.md "Official training options"): every blit, geometric and colour transform
        with multiplier 1."""
        kwargs = {name: 1 for name in _TRANSFORMS}
        kwargs.update(overrides)
        return cls(**kwargs)

    def set_p(self, value: float) -> None:
        """Set the augmentation probability (a float >= 0; values above 1 act as 1)."""
        self.p.fill_(float(value))

    def extra_repr(self) -> str:
        on = ", ".join(f"{n}={getattr(self, n):g}" for n in _TRANSFORMS if getattr(self, n) > 0)
        return f"p={float(self.p):.4f}, {on or 'no transforms'}"

    # ------------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Augment a batch.

        Args:
            images: [N, C, H, W] floating point, C in {1, 3, 4}, pixel values roughly in [-1, 1].
        Returns:
            [N, C, H, W], same dtype and device; differentiable with respect to ``images``.
        """
        if images.ndim != 4:
            raise ValueError(f"AugmentPipe expects images [N, C, H, W], got shape {tuple(images.shape)}")
        N, C, H, W = images.shape
        if C not in (1, 3, 4):
            raise ValueError(f"AugmentPipe supports 1 (grey), 3 (RGB) or 4 (RGBA) channels, "
                             f"got C={C} in images of shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"AugmentPipe expects floating point images, got {images.dtype}; "
                             f"convert uint8 with x.float() / 127.5 - 1 (docs/algorithm.md 'Data feed')")
        device = images.device
        # Parameters are drawn and matrices composed in float64 so the composed transforms are
        # exact to far below the ~1e-5 float32 identity error of the resampling pass.
        p = float(self.p)
        blit, general = self._geometric_matrices(N, H, W, p, device)
        images = self._resample(images, blit, general)
        if any(getattr(self, n) > 0 for n in ("brightness", "contrast", "lumaflip", "hue", "saturation")):
            images = self._apply_color(images, self._color_matrix(N, p, device))
        return images

    # ------------------------------------------------------------------------------------------
    def _gate(self, mult: float, prob: float, n: int, device) -> torch.Tensor:
        """[n] bool: which samples get a transform applied with probability ``prob``."""
        return torch.rand([n], device=device) < min(prob, 1.0) if mult > 0 else None

    def _geometric_matrices(self, N: int, H: int, W: int, p: float, device):
        """Per-sample sampling matrices on centred pixel coordinates (origin at the image centre,
        x right, y down, unit = 1 pixel): output pixel at ``o`` reads the input at ``M·o``.

        Returns (blit [N, 3, 3], general [N, 3, 3]) float64 with ``M = blit @ general``.
        A content transform A applied after the previous ones changes the sampling matrix
        M -> M · A^{-1}; each A^{-1} below is drawn from the same (symmetric) distribution as A.
        """
        f64 = dict(dtype=torch.float64, device=device)
        blit = torch.eye(3, **f64).repeat(N, 1, 1)
        general = torch.eye(3, **f64).repeat(N, 1, 1)

        def where(mask, m):
            eye = torch.eye(3, **f64)
            return torch.where(mask[:, None, None], m, eye)

        # Pixel blitting (paper App. B): x-flip, 90° rotations, integer translation.
        if (mask := self._gate(self.xflip, p * self.xflip, N, device)) is not None:
            flip = torch.randint(2, [N], device=device).to(torch.float64)
            blit = blit @ where(mask, _scale2d(1 - 2 * flip, torch.ones_like(flip)))
        if (mask := self._gate(self.rotate90, p * self.rotate90, N, device)) is not None:
            k = torch.randint(4, [N], device=device).to(torch.float64)
            # Rounded: float64 cos(pi/2) is 6e-17, and blits must map pixel centres exactly.
            blit = blit @ where(mask, torch.round(_rotate2d(k * (math.pi / 2))))
        if (mask := self._gate(self.xint, p * self.xint, N, device)) is not None:
            t = (torch.rand([N, 2], **f64) * 2 - 1) * self.xint_max
            blit = blit @ where(mask, _translate2d(torch.round(t[:, 0] * W), torch.round(t[:, 1] * H)))

        # General geometric transforms, in the paper's order.
        if (mask := self._gate(self.scale, p * self.scale, N, device)) is not None:
            s = torch.exp2(torch.randn([N], **f64) * self.scale_std)
            general = general @ where(mask, _scale2d(s, s))
        # Pre- and post-rotation each with 1 - sqrt(1 - p) so that P(pre or post) = p.
        p_rot = 1 - math.sqrt(max(1 - min(p * self.rotate, 1.0), 0.0))
        if (mask := self._gate(self.rotate, p_rot, N, device)) is not None:
            theta = (torch.rand([N], **f64) * 2 - 1) * math.pi * self.rotate_max
            general = general @ where(mask, _rotate2d(theta))
        if (mask := self._gate(self.aniso, p * self.aniso, N, device)) is not None:
            s = torch.exp2(torch.randn([N], **f64) * self.aniso_std)
            general = general @ where(mask, _scale2d(s, 1 / s))
        if (mask := self._gate(self.rotate, p_rot, N, device)) is not None:
            theta = (torch.rand([N], **f64) * 2 - 1) * math.pi * self.rotate_max
            general = general @ where(mask, _rotate2d(theta))
        if (mask := self._gate(self.xfrac, p * self.xfrac, N, device)) is not None:
            t = torch.randn([N, 2], **f64) * self.xfrac_std
            general = general @ where(mask, _translate2d(t[:, 0] * W, t[:, 1] * H))
        return blit, general

    def _resample(self, x: torch.Tensor, blit: torch.Tensor, general: torch.Tensor) -> torch.Tensor:
        """Exact blit gather from the reflection-extended image, then one resampling pass
        (2× sym6 upsampling, bilinear grid_sample, 2× sym6 downsampling) through ``general``."""
        N, C, H, W = x.shape
        mo, mi = _MARGIN_OUT, _MARGIN_IN

        # Where the resampling pass reads, in centred coordinates of the blitted image: the output
        # rectangle grown by the downsampling margin, through `general`, plus the input margin.
        hx, hy = W / 2 + mo, H / 2 + mo
        corners = torch.tensor([[-hx, -hy, 1], [hx, -hy, 1], [-hx, hy, 1], [hx, hy, 1]],
                               dtype=torch.float64, device=x.device).t()
        pts = (general @ corners)[:, :2, :]  # [N, 2, 4]
        lo = pts.amin(dim=(0, 2)).cpu()
        hi = pts.amax(dim=(0, 2)).cpu()
        # Bound the padding so that extreme tail draws cannot exhaust memory; reads beyond it
        # (vanishingly rare) fall back to grid_sample's reflection.
        cap = 3 * max(H, W)
        px0 = min(max(math.ceil(-W / 2 - float(lo[0]) - 1e-6) + mi, 0), cap)
        px1 = min(max(math.ceil(float(hi[0]) - W / 2 - 1e-6) + mi, 0), cap)
        py0 = min(max(math.ceil(-H / 2 - float(lo[1]) - 1e-6) + mi, 0), cap)
        py1 = min(max(math.ceil(float(hi[1]) - H / 2 - 1e-6) + mi, 0), cap)
        Wp, Hp = W + px0 + px1, H + py0 + py1

        # 1. Gather the padded, blitted image: padded pixel (a, b) has centred coordinates
        #    (a - px0 + 0.5 - W/2, b - py0 + 0.5 - H/2); the blit maps it to a pixel centre of the
        #    source, extended by reflection.
        ax = torch.arange(Wp, dtype=torch.float64, device=x.device) - px0 + 0.5 - W / 2
        ay = torch.arange(Hp, dtype=torch.float64, device=x.device) - py0 + 0.5 - H / 2
        gy, gx = torch.meshgrid(ay, ax, indexing="ij")
        coords = torch.stack([gx, gy, torch.ones_like(gx)]).reshape(3, -1)  # [3, Hp*Wp]
        src = blit @ coords  # [N, 3, Hp*Wp]
        sx = _reflect_index(torch.floor(src[:, 0] + W / 2).long(), W)
        sy = _reflect_index(torch.floor(src[:, 1] + H / 2).long(), H)
        index = (sy * W + sx)[:, None, :].expand(N, C, -1)
        xp = torch.gather(x.reshape(N, C, H * W), 2, index).reshape(N, C, Hp, Wp)

        # 2. 2× upsampling (upsample2d's padding puts upsampled pixel k at (k + 0.5)/2).
        u = upsample2d(xp, self.Hz, up=2)

        # 3. Bilinear resampling. Output grid: the output rectangle plus the margin `mo`, at twice
        #    the resolution. affine_grid's normalised output coordinate xn maps to the centred
        #    coordinate xn·(W/2 + mo); the input normalised coordinate (align_corners=False) of a
        #    centred coordinate c is (c + W/2 + px0)·2/Wp − 1.
        f64 = dict(dtype=torch.float64, device=x.device)
        out_scale = torch.diag(torch.tensor([hx, hy, 1.0], **f64))
        in_norm = torch.tensor([[2 / Wp, 0, (W + 2 * px0) / Wp - 1],
                                [0, 2 / Hp, (H + 2 * py0) / Hp - 1],
                                [0, 0, 1]], **f64)
        # Up- and downsampling with sym6 shift the content by opposite amounts `_SYM6_DELAY`; that
        # cancels for translations but leaves a position error (I − M)·delay for rotations and
        # scalings (0.1 px for a 30° turn). Sampling at M·(o + delay) − delay removes it to first
        # order (measured: the error of a 30° rotation drops from first to second order in the
        # signal frequency, like a plain sub-pixel shift).
        d = _SYM6_DELAY
        shift = torch.tensor([[1, 0, d], [0, 1, d], [0, 0, 1]], **f64)
        unshift = torch.tensor([[1, 0, -d], [0, 1, -d], [0, 0, 1]], **f64)
        theta = (in_norm @ unshift @ general @ shift @ out_scale)[:, :2, :]
        Wv, Hv = 2 * (W + 2 * mo), 2 * (H + 2 * mo)
        grid = F.affine_grid(theta, [N, C, Hv, Wv], align_corners=False).to(x.dtype)
        v = F.grid_sample(u, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

        # 4. 2× downsampling with the time-reversed filter (the orthogonal wavelet's analysis
        #    pair), then crop the margin.
        y = downsample2d(v, self.Hz, down=2, flip_filter=True)
        return y[:, :, mo:mo + H, mo:mo + W]

    def _color_matrix(self, N: int, p: float, device) -> torch.Tensor:
        """Per-sample colour matrix [N, 4, 4] float64 acting on homogeneous [r, g, b, 1]."""
        f64 = dict(dtype=torch.float64, device=device)
        C = torch.eye(4, **f64).repeat(N, 1, 1)
        eye4 = torch.eye(4, **f64)
        v = torch.tensor([1.0, 1.0, 1.0], **f64) / math.sqrt(3)  # luma axis
        vv = torch.zeros(4, 4, **f64)
        vv[:3, :3] = torch.outer(v, v)

        def where(mask, m):
            return torch.where(mask[:, None, None], m, eye4)

        if (mask := self._gate(self.brightness, p * self.brightness, N, device)) is not None:
            C = where(mask, _translate3d(torch.randn([N], **f64) * self.brightness_std)) @ C
        if (mask := self._gate(self.contrast, p * self.contrast, N, device)) is not None:
            C = where(mask, _scale3d(torch.exp2(torch.randn([N], **f64) * self.contrast_std))) @ C
        if (mask := self._gate(self.lumaflip, p * self.lumaflip, N, device)) is not None:
            i = torch.randint(2, [N], device=device).to(torch.float64)
            C = where(mask, eye4 - 2 * vv * i[:, None, None]) @ C  # Householder reflection
        if (mask := self._gate(self.hue, p * self.hue, N, device)) is not None:
            theta = (torch.rand([N], **f64) * 2 - 1) * math.pi * self.hue_max
            C = where(mask, _rotate3d_about(v, theta)) @ C
        if (mask := self._gate(self.saturation, p * self.saturation, N, device)) is not None:
            s = torch.exp2(torch.randn([N], **f64) * self.saturation_std)
            C = where(mask, vv + (eye4 - vv) * s[:, None, None]) @ C
        return C

    @staticmethod
    def _apply_color(x: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        N, ch, H, W = x.shape
        C = C.to(x.dtype)
        if ch == 1:
            # Grey = R = G = B: the output's mean over R, G, B (the luma direction) is the new grey.
            a = C[:, :3, :3].sum(dim=2).mean(dim=1)  # [N]
            b = C[:, :3, 3].mean(dim=1)
            return x * a[:, None, None, None] + b[:, None, None, None]
        rgb = x[:, :3].reshape(N, 3, H * W)
        rgb = (C[:, :3, :3] @ rgb + C[:, :3, 3:]).reshape(N, 3, H, W)
        return torch.cat([rgb, x[:, 3:]], dim=1) if ch == 4 else rgb

