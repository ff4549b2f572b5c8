"""Rate-distortion training of the demo hyperprior: loss = bpp + lambda * 255^2 * MSE."""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

from src.trainer.base_trainer import BaseTrainer
from src.trainer.optim import build_optimizer
from src.utils.padding import pad_to_multiple
from src.utils.registry import MODELS, TRAINERS


@TRAINERS.register()
class RateDistortionDemoTrainer(BaseTrainer):
    def build_model(self):
        return MODELS.build(self.cfg.model)

    def build_optimizers(self):
        main = [p for n, p in self.model.named_parameters() if not n.endswith(".quantiles")]
        aux = [p for n, p in self.model.named_parameters() if n.endswith(".quantiles")]
        return {"g": build_optimizer(main, self.cfg.optim.g_optimizer),
                "aux": build_optimizer(aux, self.cfg.optim.aux_optimizer)}

    def train_step(self, batch, it: int) -> Dict[str, float]:
        x = batch["image"]
        with self.autocast():
            out = self.net(x)
        bpp = out["bpp"].mean()
        mse = F.mse_loss((out["x_hat"].float() + 1) / 2, (x + 1) / 2)
        loss = bpp + float(self.cfg.loss.lmbda) * 255 ** 2 * mse
        self.check_finite({"bpp": bpp, "mse": mse})
        self.optimize("g", loss, clip=self.cfg.optim.get("clip_max_norm"))
        aux = self.model.aux_loss()
        self.optimize("aux", aux)
        psnr = -10 * torch.log10(mse.detach().clamp_min(1e-10))
        return {"loss": loss.item(), "bpp": bpp.item(), "psnr": psnr.item(), "aux": aux.item()}

    def before_save(self) -> None:
        """Save the entropy coder's tables with the weights they were built from."""
        with torch.no_grad():
            self.model.update(force=True)

    def validate(self, it: int) -> Dict[str, float]:
        """Real bits from compressai's rANS coder on the evaluation images, and PSNR."""
        self.model.update(force=True)
        bpps, psnrs, samples = [], [], {}
        for i in range(len(self.eval_dataset)):
            item = self.eval_dataset[i]
            x = item["image"].unsqueeze(0).to(self.device)
            h, w = x.shape[2:]
            xp, _ = pad_to_multiple(x, 64)
            enc = self.model.compress(xp)
            x_hat = self.model.decompress(enc["strings"], enc["shape"])["x_hat"][..., :h, :w]
            bits = 8 * sum(len(s[0]) for s in enc["strings"])
            bpps.append(bits / (h * w))
            mse = F.mse_loss((x_hat + 1) / 2, (x + 1) / 2).item()
            psnrs.append(10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-10))).item())
            if i < 4:
                samples[item["name"]] = x_hat[0]
        self.save_samples(it, samples)
        return {"real_bpp": sum(bpps) / len(bpps), "psnr": sum(psnrs) / len(psnrs)}
