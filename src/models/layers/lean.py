"""Memory-lean inference of the full-resolution layers: row strips instead of whole-map temporaries.

Without autograd nothing has to be kept for a backward pass, so a block ``conv(silu(GN(x)))`` can
be evaluated strip by strip: the GroupNorm statistics are taken over the whole map first, then each
strip of rows is normalised, activated and convolved with a halo of ``padding`` rows (zero rows
standing for the conv's padding at the image border). The output equals the whole-map layers up to
float rounding, but the normalised, activated, upsampled or padded copies of a whole feature map
never exist: decoding a 768x512 photo with the VQGAN decoder needs the feature maps themselves and
a few strips, not three or four full-resolution temporaries per block (``docs/benchmarks.md``).

Used by the VQGAN encoder/decoder (:mod:`src.models.vq.backbone`) and the SFT fusion blocks
(:mod:`src.models.layers.fusion`) whenever ``torch.is_grad_enabled()`` is false (``no_grad`` /
``inference_mode``: validation, compression, decompression). Training is unchanged.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Strips hold about this many input elements (16 MB in float32).
STRIP_ELEMENTS = 1 << 22
#: Maps at least this large (bytes) are followed by :func:`release_freed_memory`.
RELEASE_BYTES = 64 << 20


def _malloc_trim():
    """glibc's ``malloc_trim`` (None elsewhere): freed strip buffers are below glibc's mmap
    threshold, so without it their pages stay resident after every full-resolution block."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release_freed_memory(t: Tensor) -> None:
    """Hand freed heap pages back to the OS after a block on a large CPU map (no-op otherwise)."""
    if _TRIM is not None and t.device.type == "cpu" and t.numel() * t.element_size() >= RELEASE_BYTES:
        _TRIM(0)


def lean_enabled(module: nn.Module) -> bool:
    """No autograd, and no active dropout in ``module`` (strips would draw other masks)."""
    drop = getattr(module, "dropout", None)
    return not torch.is_grad_enabled() and not (module.training and drop is not None and drop.p > 0)


def strip_rows(x: Tensor, cost_per_row: int = 1) -> int:
    """Rows per strip for ``x`` (B, C, H, W), ``cost_per_row`` times the elements of one row."""
    return max(1, STRIP_ELEMENTS // (x.shape[0] * x.shape[1] * x.shape[3] * cost_per_row))


def conv_rows(t: Tensor, start: int, height: int, conv: nn.Conv2d, a: int, b: int,
              pre: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
    """Output rows ``a:b`` of a stride-1 'same'-padded ``conv`` over a map of ``height`` rows of
    which ``t`` holds the rows from ``start`` on (at least the ``padding`` rows around ``a:b`` that
    exist). ``pre`` (pointwise) is applied to the input rows before the border's zero padding."""
    p = conv.padding[0]
    lo, hi = max(0, a - p), min(height, b + p)
    if lo < start or hi - start > t.shape[2]:
        raise ValueError(f"rows {lo}:{hi} are not all in the {t.shape[2]} rows held from {start}")
    part = t[:, :, lo - start:hi - start]
    if pre is not None:
        part = pre(part)
    top, bottom = lo - (a - p), (b + p) - hi
    if top or bottom:  # only at the image border (F.pad would copy even when padding nothing)
        part = F.pad(part, (0, 0, top, bottom))
    return F.conv2d(part, conv.weight, conv.bias, padding=(0, conv.padding[1]))


def group_norm_affine(x: Tensor, norm: nn.GroupNorm):
    """Per-sample, per-channel ``(scale, shift)`` (B, C, 1, 1) with ``norm(x) == x * scale + shift``."""
    b, c, h, w = x.shape
    g = norm.num_groups
    # two passes, the second in strips: twice as fast as torch.var_mean on CPU, as exact
    mean = x.reshape(b, g, -1).float().mean(dim=2)
    groups, centre = x.reshape(b, g, c // g, h, w), mean[:, :, None, None, None]
    squares = torch.zeros_like(mean)
    rows = strip_rows(x)
    for r0 in range(0, h, rows):
        squares += (groups[:, :, :, r0:r0 + rows].float() - centre).square_().sum(dim=(2, 3, 4))
    var = squares / (c // g * h * w)
    rstd = torch.rsqrt(var + norm.eps).repeat_interleave(c // g, dim=1)
    scale = rstd * norm.weight.float() if norm.affine else rstd
    shift = -mean.repeat_interleave(c // g, dim=1) * scale
    if norm.affine:
        shift = shift + norm.bias.float()
    return scale.to(x.dtype)[:, :, None, None], shift.to(x.dtype)[:, :, None, None]


def norm_silu_conv(x: Tensor, norm: nn.GroupNorm, conv: nn.Conv2d, inplace: bool = False) -> Tensor:
    """``conv(silu(norm(x)))`` in strips. ``inplace`` writes the result over ``x`` (same channel
    count): each strip's result is written back only after the next strip, whose halo reaches
    into it, has read the original rows."""
    b, c, h, w = x.shape
    scale, shift = group_norm_affine(x, norm)

    def act(part: Tensor) -> Tensor:
        return F.silu(torch.addcmul(shift, part, scale), inplace=True)

    if inplace and conv.out_channels != c:
        raise ValueError(f"in-place needs equal widths, got {c} -> {conv.out_channels}")
    out = x if inplace else x.new_empty(b, conv.out_channels, h, w)
    rows = max(strip_rows(x), conv.padding[0])  # a halo never reaches past the previous strip
    pending = None  # (rows, result) not yet written (in-place only)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        y = conv_rows(x, 0, h, conv, r0, r1, act)
        if not inplace:
            out[:, :, r0:r1] = y
            continue
        if pending is not None:
            out[:, :, pending[0]:pending[1]] = pending[2]
        pending = (r0, r1, y)
    if pending is not None:
        out[:, :, pending[0]:pending[1]] = pending[2]
    return out


def add_conv1x1_(out: Tensor, x: Tensor, conv: nn.Conv2d) -> Tensor:
    """``out += conv(x)`` for a 1x1 conv, in strips."""
    rows = strip_rows(x)
    for r0 in range(0, x.shape[2], rows):
        out[:, :, r0:r0 + rows] += conv(x[:, :, r0:r0 + rows])
    return out


def resblock(x: Tensor, norm1: nn.GroupNorm, conv1: nn.Conv2d, norm2: nn.GroupNorm, conv2: nn.Conv2d,
             shortcut: Optional[nn.Conv2d]) -> Tensor:
    """``shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))))))`` holding one extra map."""
    h = norm_silu_conv(x, norm1, conv1)
    h = norm_silu_conv(h, norm2, conv2, inplace=True)
    h = add_conv1x1_(h, x, shortcut) if shortcut is not None else h.add_(x)
    release_freed_memory(x)
    return h


def upsample_conv(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """``conv(nearest_upsample_x2(x))`` in strips of input rows."""
    b, c, h, w = x.shape
    out = x.new_empty(b, conv.out_channels, 2 * h, 2 * w)
    rows = strip_rows(x, 4)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        lo, hi = max(0, r0 - 1), min(h, r1 + 1)
        up = F.interpolate(x[:, :, lo:hi], scale_factor=2.0, mode="nearest")
        out[:, :, 2 * r0:2 * r1] = conv_rows(up, 2 * lo, 2 * h, conv, 2 * r0, 2 * r1)
    release_freed_memory(out)
    return out


def pad_downsample_conv(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """``conv(pad(x, right 1, bottom 1))`` for a stride-2 3x3 conv without padding, in strips."""
    b, c, h, w = x.shape
    oh, ow = (h - 2) // 2 + 1, (w - 2) // 2 + 1
    out = x.new_empty(b, conv.out_channels, oh, ow)
    rows = strip_rows(x, 2)
    for o0 in range(0, oh, rows):  # output row i reads input rows 2i .. 2i + 2
        o1 = min(oh, o0 + rows)
        part = x[:, :, 2 * o0:min(h, 2 * o1 + 1)]
        out[:, :, o0:o1] = conv(F.pad(part, (0, 1, 0, 2 * (o1 - o0) + 1 - part.shape[2])))
    return out


def attention_in_chunks(q: Tensor, k: Tensor, v: Tensor, chunk: int = 1024) -> Tensor:
    """``scaled_dot_product_attention`` over query chunks: the (queries x keys) weights of only
    ``chunk`` queries exist at a time (each query's softmax is independent of the others)."""
    if q.shape[-2] <= chunk:
        return F.scaled_dot_product_attention(q, k, v)
    return torch.cat([F.scaled_dot_product_attention(q[..., i:i + chunk, :], k, v)
                      for i in range(0, q.shape[-2], chunk)], dim=-2)
