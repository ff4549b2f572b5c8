"""Channel-wise autoregressive context model (ChARM) with latent residual prediction.

Minnen & Singh, "Channel-wise Autoregressive Entropy Models for Learned Image Compression",
ICIP 2020. Names follow the DC-VIC reference (``mean_slice_transforms.{i}.model.{0,2,4}``,
``scale_slice_transforms``, ``lrp_slice_transforms``).

y is split into ``num_slices`` channel slices, coded in order; slice i is predicted from the
hyper-decoder output and the first ``min(i, max_support_slices)`` decoded slices::

    hyper_out -> (hyper_mean, hyper_scale)
    for i:  support = y_hat[0 : min(i, S)]
            mu_i    = mean_transform_i ([hyper_mean ; support])
            sigma_i = scale_transform_i([hyper_scale; support])
            y_hat_i = Q(y_i; mu_i, sigma_i)                 (GaussianConditional)
            y_hat_i = y_hat_i + 0.5 * tanh(lrp_i([hyper_mean ; support ; y_hat_i]))

The same two helpers (``_params``, ``_lrp``) serve ``forward`` and ``code``. Coding (``code``,
one pass for compress and decompress) runs them in exact integer arithmetic (:mod:`src.models.entropy.exact`),
so that the decoder computes the encoder's means, scales and supports bit for bit on any machine;
``forward`` (training, rate estimates) stays in float32 and agrees to float noise.
``hidden_chs`` exists for narrow test models only.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
from compressai.entropy_models import GaussianConditional
from torch import Tensor, nn

from src.models.entropy.exact import exact_tanh, on_grid, run_exact
from src.utils.registry import SUBNETS

#: (slice index, CDF indexes, means) -> integer symbols of that slice
SymbolSource = Callable[[int, Tensor, Tensor], Tensor]


class SliceTransform(nn.Module):
    """conv5x5 (224) -> ReLU -> conv5x5 (128) -> ReLU -> conv3x3 (out)."""

    def __init__(self, in_ch: int, out_ch: int, hidden_chs: Sequence[int] = (224, 128)):
        super().__init__()
        c1, c2 = hidden_chs
        self.model = nn.Sequential(
            nn.Conv2d(in_ch, c1, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.Conv2d(c2, out_ch, kernel_size=3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


@SUBNETS.register()
class Minnen20CharmContextModel(nn.Module):
    def __init__(self, num_slices: int, bottleneck_y: int, hyper_out_ch: int,
                 max_support_slices: int = 5, hidden_chs: Sequence[int] = (224, 128)):
        super().__init__()
        if bottleneck_y % num_slices:
            raise ValueError(f"bottleneck_y ({bottleneck_y}) must be divisible by "
                             f"num_slices ({num_slices})")
        if not (max_support_slices == -1 or 1 <= max_support_slices <= num_slices):
            raise ValueError(f"max_support_slices must be -1 or in [1, {num_slices}], "
                             f"got {max_support_slices}")
        self.num_slices = num_slices
        self.slice_ch = bottleneck_y // num_slices
        self.max_support_slices = max_support_slices
        half = hyper_out_ch // 2
        self.mean_slice_transforms = nn.ModuleList()
        self.scale_slice_transforms = nn.ModuleList()
        self.lrp_slice_transforms = nn.ModuleList()
        for i in range(num_slices):
            sup = self.slice_ch * len(self._support(list(range(i))))
            self.mean_slice_transforms.append(SliceTransform(half + sup, self.slice_ch, hidden_chs))
            self.scale_slice_transforms.append(SliceTransform(half + sup, self.slice_ch, hidden_chs))
            self.lrp_slice_transforms.append(
                SliceTransform(half + sup + self.slice_ch, self.slice_ch, hidden_chs))

    def _support(self, decoded: List) -> List:
        return decoded if self.max_support_slices < 0 else decoded[: self.max_support_slices]

    def _params(self, i: int, hyper_out: Tensor, decoded: List[Tensor],
                exact: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
        """-> (mean_support, mu_i, sigma_i) for slice i (``exact``: on the exact grid, float64)."""
        hyper_mean, hyper_scale = hyper_out.chunk(2, dim=1)
        support = self._support(decoded)
        mean_support = torch.cat([hyper_mean] + support, dim=1)
        scale_support = torch.cat([hyper_scale] + support, dim=1)
        mean_net, scale_net = self.mean_slice_transforms[i], self.scale_slice_transforms[i]
        if exact:
            return (mean_support, run_exact(mean_net.model, mean_support),
                    run_exact(scale_net.model, scale_support))
        return mean_support, mean_net(mean_support), scale_net(scale_support)

    def _lrp(self, i: int, mean_support: Tensor, y_hat_i: Tensor, exact: bool = False) -> Tensor:
        net, x = self.lrp_slice_transforms[i], torch.cat([mean_support, y_hat_i], dim=1)
        if exact:  # y_hat_i = symbols + mu lies on the grid, and so does the sum
            return y_hat_i + on_grid(0.5 * exact_tanh(run_exact(net.model, x)))
        return y_hat_i + 0.5 * torch.tanh(net(x))

    def forward(self, y: Tensor, hyper_out: Tensor, entropy_model_y: nn.Module,
                training: Optional[bool] = None, calc_q_likelihood: bool = False
                ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """-> (y_hat, likelihoods, likelihoods of rounded y or None)."""
        decoded, liks, q_liks = [], [], []
        for i, y_i in enumerate(y.chunk(self.num_slices, dim=1)):
            mean_support, mu, sigma = self._params(i, hyper_out, decoded)
            params = torch.cat([mu, sigma], dim=1)
            y_hat_i, lik = entropy_model_y(y_i, params, training=training)
            liks.append(lik)
            if calc_q_likelihood:
                with torch.no_grad():
                    q_liks.append(entropy_model_y(y_i, params, training=False)[1])
            decoded.append(self._lrp(i, mean_support, y_hat_i))
        q = torch.cat(q_liks, dim=1) if calc_q_likelihood else None
        return torch.cat(decoded, dim=1), torch.cat(liks, dim=1), q

    @torch.no_grad()
    def code(self, hyper_out: Tensor, entropy_model_y: GaussianConditional, symbols_of: SymbolSource) -> Tensor:
        """The coding pass, one for sender and receiver: for each slice, the exact means and scale
        indexes, then ``symbols_of(i, indexes, mu)`` (the sender rounds ``y_i - mu`` and writes the
        symbols, the receiver reads them), then ``y_hat_i = symbols + mu`` and the LRP.

        ``hyper_out`` comes from the exact h_s (``Minnen20HyperDecoder.exact``). Returns y_hat in
        float64; it is the same bits on both sides, on any machine."""
        decoded = []
        for i in range(self.num_slices):
            mean_support, mu, sigma = self._params(i, hyper_out, decoded, exact=True)
            indexes = entropy_model_y.build_indexes(sigma)
            symbols = symbols_of(i, indexes, mu)
            decoded.append(self._lrp(i, mean_support, symbols.double() + mu, exact=True))
        return torch.cat(decoded, dim=1)
