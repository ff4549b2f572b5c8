"""The latent codec of DC-VIC: h_a -> EntropyBottleneck -> h_s -> ChARM, wired once.

Minnen, Balle & Toderici 2018 (hyperprior with mean and scale), Minnen & Singh 2020 (ChARM:
channel-wise autoregressive slices with latent residual prediction). CompressAI's
``LatentCodec`` contract::

    forward(y)                 -> {"y_hat", "z_hat", "likelihoods": {y, z}, "q_likelihoods": {y, z}}
    compress(y)                -> {"strings": [[one string per sample]], "shape": z (h, w), "y_hat",
                                   "ideal_bits": per sample {z, y}} (+ "estimated_bits")
    decompress(strings, shape) -> {"y_hat"}

``compress`` and ``decompress`` compute h_s and ChARM on the CPU in exact integer arithmetic
(:mod:`src.models.entropy.exact`) with the stored CDF tables, so a stream made on one machine or
device decodes bit for bit on any other (:meth:`on_cpu`). Each string holds z, then the y slices
in order (:mod:`src.models.codec.symbols`).

The codec does not own its five networks for the state dict: DC-VIC registers them under the
reference's names (``hyperencoder.*``, ``hyperdecoder.*``, ``context_model.*``,
``entropy_model_z.*``, ``entropy_model_y.*``) and wires them into this codec on demand
(``DCVIC.latent_codec``).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from compressai.latent_codecs import LatentCodec
from torch import Tensor, nn

from src.models.codec.symbols import SymbolReader, SymbolWriter
from src.models.entropy.charm import SymbolSource
from src.models.entropy.rate import bits


def _location(m: nn.Module) -> Tuple[torch.device, torch.dtype]:
    """Device and floating dtype of a module's tensors (CPU float32 when it has none)."""
    tensors = [t for t in list(m.parameters()) + list(m.buffers()) if t.is_floating_point()]
    return (tensors[0].device, tensors[0].dtype) if tensors else (torch.device("cpu"), torch.float32)


class HyperpriorCharmLatentCodec(LatentCodec):
    """y <-> strings through the hyperprior and the ChARM context model (see the module docstring)."""

    def __init__(self, hyperencoder: nn.Module, hyperdecoder: nn.Module, context_model: nn.Module,
                 entropy_model_z: nn.Module, entropy_model_y: nn.Module):
        super().__init__()
        self.hyperencoder, self.hyperdecoder = hyperencoder, hyperdecoder
        self.context_model = context_model
        self.entropy_model_z, self.entropy_model_y = entropy_model_z, entropy_model_y

    def forward(self, y: Tensor, training: Optional[bool] = None) -> Dict[str, object]:
        """-> y_hat, z_hat, likelihoods (noisy when training) and the likelihoods of the rounded latents."""
        return self._chain(y, self.hyperencoder(y), self.training if training is None else training)

    def _chain(self, y: Tensor, z: Tensor, training: bool) -> Dict[str, object]:
        """``forward`` from y and its hyper-latent z = h_a(y)."""
        z_hat, z_lik = self.entropy_model_z(z, training=training)
        hyper_out = self.hyperdecoder(z_hat)
        y_hat, y_lik, y_qlik = self.context_model(y, hyper_out, self.entropy_model_y,
                                                  training=training, calc_q_likelihood=training)
        if training:
            with torch.no_grad():
                z_qlik = self.entropy_model_z(z, training=False)[1]
        else:
            y_qlik, z_qlik = y_lik, z_lik
        return {"y_hat": y_hat, "z_hat": z_hat, "likelihoods": {"y": y_lik, "z": z_lik},
                "q_likelihoods": {"y": y_qlik, "z": z_qlik}}

    @contextlib.contextmanager
    def on_cpu(self):
        """Run h_s, ChARM and both entropy models on the CPU, then move them back.

        When coding, h_s and ChARM compute in exact integer arithmetic (float64 values on a fixed
        grid, :mod:`src.models.entropy.exact`): the means, scale indices and slice supports are
        the same bits for any thread count, CPU kernel set, oneDNN setting or encoder device, so
        the rANS decoder cannot lose step with the encoder. They differ from the float32
        ``forward``'s by float noise only (rates within 0.01%, see docs/benchmarks.md)."""
        mods = [self.hyperdecoder, self.context_model, self.entropy_model_z, self.entropy_model_y]
        where = [_location(m) for m in mods]
        try:
            for m in mods:
                m.to(device="cpu", dtype=torch.float32)
            yield
        finally:
            for m, (dev, dt) in zip(mods, where):
                m.to(device=dev, dtype=dt)

    @torch.no_grad()
    def compress(self, y: Tensor, estimate: bool = False) -> Dict[str, object]:
        """-> {"strings", "shape", "y_hat" (float32, CPU: what the receiver decodes), "ideal_bits":
        per sample {"z", "y"}, the code length of its symbols under the coder's tables}.
        ``estimate`` adds "estimated_bits": per sample {"z", "y"}, the float32 likelihoods' estimate
        for the same latents."""
        z = self.hyperencoder(y)
        estimated = None
        if estimate:   # the same z as the coded one: h_a runs once
            lik = self._chain(y, z, training=False)["likelihoods"]
            per_sample = {k: bits(v.double()).tolist() for k, v in lik.items()}
            estimated = [{k: per_sample[k][b] for k in ("z", "y")} for b in range(y.shape[0])]
        writers = [SymbolWriter() for _ in range(y.shape[0])]
        with self.on_cpu():
            y, z = y.float().cpu(), z.float().cpu()
            y_slices = y.double().chunk(self.context_model.num_slices, dim=1)

            def write(name: str, model: nn.Module, symbols: Tensor, indexes: Tensor) -> Tensor:
                for b, w in enumerate(writers):
                    w.write(name, model, symbols[b], indexes[b])
                return symbols

            y_hat = self.code(tuple(z.shape), lambda idx, med: write(
                "z", self.entropy_model_z, torch.round(z - med).int(), idx), lambda i, idx, mu: write(
                "y", self.entropy_model_y, torch.round(y_slices[i] - mu).int(), idx))
        out = {"strings": [[w.flush() for w in writers]], "shape": tuple(z.shape[-2:]),
               "y_hat": y_hat.float(), "ideal_bits": [w.ideal_bits() for w in writers]}
        if estimated is not None:
            out["estimated_bits"] = estimated
        return out

    @torch.no_grad()
    def decompress(self, strings: Sequence[List[bytes]], shape: Sequence[int]) -> Dict[str, Tensor]:
        """Entropy decoding only (on the CPU): -> {"y_hat"}, float32 on the CPU, the bits of
        ``compress``'s ``y_hat`` on any machine."""
        if len(strings) != 1:
            raise ValueError(f"expected one group of strings (one string per sample), got {len(strings)}")
        readers = [SymbolReader(s) for s in strings[0]]
        z_shape = (len(readers), self.entropy_model_z.channels, *shape)
        with self.on_cpu():
            def read(model: nn.Module, indexes: Tensor) -> Tensor:
                return torch.stack([r.read(model, indexes[b]) for b, r in enumerate(readers)])

            y_hat = self.code(z_shape, lambda idx, med: read(self.entropy_model_z, idx),
                              lambda i, idx, mu: read(self.entropy_model_y, idx))
        for r in readers:
            r.finish()
        return {"y_hat": y_hat.float()}

    def code(self, z_shape: Sequence[int], z_symbols: Callable[[Tensor, Tensor], Tensor],
             y_symbols: SymbolSource) -> Tensor:
        """The entropy chain of sender and receiver alike: z symbols -> z_hat -> exact h_s ->
        ChARM slices (exact) -> y_hat (float64). ``z_symbols(indexes, medians)`` and
        ``y_symbols(i, indexes, mu)`` write or read the symbols; everything else is shared, so the
        two sides cannot drift apart."""
        ez = self.entropy_model_z
        indexes = ez._build_indexes(z_shape)
        medians = ez._get_medians().detach().reshape(1, -1, 1, 1).expand(z_shape)
        z_hat = z_symbols(indexes, medians).float() + medians
        hyper_out = self.hyperdecoder.exact(z_hat)
        return self.context_model.code(hyper_out, self.entropy_model_y, y_symbols)
