"""Low-pass filter design for the synthesis layers (docs/algorithm.md "Filter design").

Separable filters are windowed sincs (`scipy.signal.firwin` with a Kaiser window); config R's
non-critical down filters are radially symmetric: a jinc windowed by the outer product of two
Kaiser windows. All filters have unit DC gain and an even number of taps (centred between samples).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.signal
import scipy.special
import torch


def kaiser_beta_for(numtaps: int, width: float, fs: float) -> float:
    """Kaiser window beta for a transition band of `width` (same units as `fs`) and `numtaps` taps.

    Attenuation `A = 2.285*(numtaps-1)*pi*(width/(fs/2)) + 7.95` dB, then Kaiser's empirical beta
    (docs/algorithm.md "Filter design"; the same formulas `scipy.signal.kaiser_atten`/`kaiser_beta` implement).
    """
    atten = scipy.signal.kaiser_atten(numtaps, width / (fs / 2))
    return float(scipy.signal.kaiser_beta(atten))


def design_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float,
                          radial: bool = False) -> Optional[np.ndarray]:
    """Design a low-pass FIR filter.

    numtaps: number of taps per axis (1 = identity, returns None).
    cutoff: cutoff frequency (cycles per unit); width: transition-band width; fs: sampling rate.
    radial: True -> 2-D radially symmetric jinc*Kaiser filter `[numtaps, numtaps]`; False -> 1-D
    separable filter `[numtaps]` (applied along x then y).
    Returns float64 numpy array normalised to sum 1, or None for the identity.
    """
    assert numtaps >= 1
    if numtaps == 1:
        return None
    if not radial:
        return scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
    # Radial: f(r) = J1(2*pi*cutoff*r) / (pi*r), the 2-D ideal low-pass (jinc), r never 0 for even numtaps.
    u = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(u, u))
    f = scipy.special.j1(2 * np.pi * cutoff * r) / (np.pi * r)
    window = np.kaiser(numtaps, kaiser_beta_for(numtaps, width, fs))
    f = f * np.outer(window, window)
    return f / np.sum(f)


def filter_tensor(f: Optional[np.ndarray]) -> Optional[torch.Tensor]:
    """Convert a designed filter to the float32 buffer stored in the state_dict (None stays None)."""
    if f is None:
        return None
    return torch.as_tensor(np.asarray(f, dtype=np.float32))


__all__ = ["design_lowpass_filter", "kaiser_beta_for", "filter_tensor"]
