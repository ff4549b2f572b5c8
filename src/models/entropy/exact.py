"""Exact arithmetic for the entropy parameters: the same bits on every machine.

The rANS decoder keeps step with the encoder only if both compute the same means and scale
indices bit for bit. float32 convolutions do not promise that: the order of their sums depends on
the thread count, the CPU's vector kernels (``ATEN_CPU_CAPABILITY``), oneDNN and the device, and a
mean a few ulps off, or a scale that crosses a boundary of the scale table, desynchronises the
decoder. So when coding, h_s and the ChARM transforms run here on integers held in float64
(in the spirit of Balle et al., "Integer networks for data compression with latent-variable
models", ICLR 2019, but post-training, on the float weights as trained):

* activations are multiples of ``2**-ACT_BITS``, clamped to ``+-ACT_LIMIT`` and rounded again after
  every layer;
* a convolution's weights are rounded to multiples of ``2**-b`` and its bias to ``2**-(ACT_BITS+b)``,
  ``b`` chosen per layer from its weights (:func:`weight_bits`) so that no partial sum can reach
  ``2**53``: every product and every partial sum is then an integer that float64 holds exactly,
  whatever the order of summation;
* ReLU, clamping, scaling by powers of two and rounding are exact, and the tanh of the latent
  residual prediction is evaluated with ``+ - * /`` only (:func:`exact_tanh`), which IEEE 754
  rounds correctly on every machine.

Inputs and outputs are ordinary float64 tensors whose values lie on the activation grid, so the
callers (``Minnen20CharmContextModel``, ``Minnen20HyperDecoder``) keep their shape of code. The
grids are fine (activations 1.5e-5, weights about 1e-5 of their size) so the parameters stay
within float noise of the trained float32 ones; docs/benchmarks.md has the measured rate and time.
"""
from __future__ import annotations

import weakref
from typing import Iterable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACT_BITS = 16                    # activations are multiples of 2**-16
ACT_LIMIT = 2.0 ** 12            # ... clamped to +-4096 (a trained model stays far inside)
_ACT_SCALE = 2.0 ** ACT_BITS
_GRID_LIMIT = ACT_LIMIT * _ACT_SCALE
SUM_LIMIT = 2.0 ** 52            # a margin of 2 below float64's exact-integer range 2**53
MAX_WEIGHT_BITS = 24
MIN_WEIGHT_BITS = 8
# 1/k for the Taylor series of exp; Python floats, so the same doubles on every machine
_INV = tuple(1.0 / k for k in range(12, 0, -1))
_INTEGER_WEIGHTS: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


class ExactRangeError(ValueError):
    """A layer's weights are too large for exact integer arithmetic at the chosen grids."""


def on_grid(x: Tensor) -> Tensor:
    """``x`` rounded to the activation grid, clamped, as float64."""
    return torch.round(x.double() * _ACT_SCALE).clamp_(-_GRID_LIMIT, _GRID_LIMIT) * (1.0 / _ACT_SCALE)


def weight_bits(layer: nn.Module) -> int:
    """Fraction bits of ``layer``'s integer weights: the most (up to ``MAX_WEIGHT_BITS``) for which
    no sum of the convolution can reach ``SUM_LIMIT`` with activations inside ``+-ACT_LIMIT``."""
    w = layer.weight.detach().double().abs()
    # fan-in of one output value: conv (out, in, kh, kw) sums over dims 1-3; a transposed conv
    # (in, out, kh, kw) sums over a subset of dims 0, 2, 3, bounded here by all of them
    dims = (0, 2, 3) if isinstance(layer, nn.ConvTranspose2d) else (1, 2, 3)
    l1 = float(w.sum(dim=dims).max())
    fan_in = w.numel() // w.shape[1 if isinstance(layer, nn.ConvTranspose2d) else 0]
    bias = 0.0 if layer.bias is None else float(layer.bias.detach().abs().max())
    for b in range(MAX_WEIGHT_BITS, MIN_WEIGHT_BITS - 1, -1):
        scale = 2.0 ** b
        # |sum| <= |x| * sum(|w| 2^b + 1/2) + |bias| 2^(A+b) + 1/2, all in units of 2^-(A+b)
        bound = _GRID_LIMIT * (l1 * scale + fan_in / 2) + bias * _ACT_SCALE * scale + 1
        if bound <= SUM_LIMIT:
            return b
    raise ExactRangeError(f"{type(layer).__name__} with weights summing to {l1:.3g} per output cannot be "
                          f"evaluated exactly on a grid finer than 2**-{MIN_WEIGHT_BITS}")


def integer_weights(layer: nn.Module) -> Tuple[int, Tensor, Optional[Tensor]]:
    """(b, weights in units of 2**-b, bias in units of 2**-(ACT_BITS+b)) of ``layer``, kept until
    its parameters change (in place, as an optimizer or ``load_state_dict`` does, or moved)."""
    params = [p for p in (layer.weight, layer.bias) if p is not None]
    key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
    cached = _INTEGER_WEIGHTS.get(layer)
    if cached is not None and cached[0] == key:
        return cached[1]
    b = weight_bits(layer)
    w = torch.round(layer.weight.detach().double() * 2.0 ** b)
    bias = None if layer.bias is None else torch.round(layer.bias.detach().double() * (_ACT_SCALE * 2.0 ** b))
    _INTEGER_WEIGHTS[layer] = (key, (b, w, bias))
    return b, w, bias


def exact_conv(layer: nn.Module, x: Tensor) -> Tensor:
    """``layer(x)`` (a Conv2d or ConvTranspose2d) in exact integer arithmetic; -> values on the grid."""
    if layer.padding_mode != "zeros":
        raise TypeError(f"exact convolution supports zero padding only, not {layer.padding_mode!r}")
    b, w, bias = integer_weights(layer)
    w, bias = w.to(x.device), None if bias is None else bias.to(x.device)
    k = torch.round(x.double() * _ACT_SCALE).clamp_(-_GRID_LIMIT, _GRID_LIMIT)   # integers
    if isinstance(layer, nn.ConvTranspose2d):
        out = F.conv_transpose2d(k, w, bias, layer.stride, layer.padding, layer.output_padding,
                                 layer.groups, layer.dilation)
    elif isinstance(layer, nn.Conv2d):
        out = F.conv2d(k, w, bias, layer.stride, layer.padding, layer.dilation, layer.groups)
    else:
        raise TypeError(f"no exact convolution for {type(layer).__name__}")
    return torch.round(out * 2.0 ** -b).clamp_(-_GRID_LIMIT, _GRID_LIMIT) * (1.0 / _ACT_SCALE)


def run_exact(layers: Iterable[nn.Module], x: Tensor) -> Tensor:
    """A chain of convolutions and ReLUs, exactly; ``x`` and the result lie on the grid."""
    x = on_grid(x)
    for layer in layers:
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            x = exact_conv(layer, x)
        elif isinstance(layer, nn.ReLU):
            x = torch.relu(x)
        else:
            raise TypeError(f"no exact form for {type(layer).__name__}")
    return x


def exact_tanh(x: Tensor) -> Tensor:
    """tanh in float64 from correctly rounded ``+ - * /`` alone, so the same bits everywhere
    (``torch.tanh`` differs in its last bits between vector kernels); within 1e-12 of tanh.

    tanh(a) = (1 - e) / (1 + e) with e = exp(-2a), a = min(|x|, 9) (tanh(9) is 1 - 3e-8);
    exp(-t) for t = 2a / 64 <= 0.29 by its Taylor series to degree 12, then squared six times."""
    t = x.double().abs().clamp(max=9.0) * (2.0 / 64)
    e = torch.ones_like(t)
    for inv_k in _INV:               # Horner: exp(-t) = 1 - t (1 - t/2 (1 - t/3 (...)))
        e = 1.0 - (t * inv_k) * e
    for _ in range(6):
        e = e * e
    th = (1.0 - e) / (1.0 + e)
    return torch.where(x < 0, -th, th)

