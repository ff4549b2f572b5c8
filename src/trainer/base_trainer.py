"""The training loop shared by every trainer (nanoGPT-style: it reads top to bottom).

A trainer subclass supplies four things:

* ``build_model()``       -> the ``nn.Module`` being trained (saved as ``comp_model``)
* ``build_optimizers()``  -> ``{name: optimizer}`` (schedules come from ``optim.<name>_scheduler``)
* ``train_step(batch, it)`` -> ``{name: float}`` of logged scalars; it does its own
  backward passes through :meth:`optimize`, so the order of G/D/aux updates is visible
* ``validate(it)``        -> ``{name: float}`` (optional; runs every ``eval_step``)

The base owns everything else: devices and DDP (or FSDP: ``parallel: fsdp``, see
:mod:`src.trainer.sharding`), data, seeds, lr schedules, logging (scalars
averaged over the ranks), checkpoints (atomic, keep policy, auto-resume or resume at a given
iteration, loading a previous step), signals, and gradient accumulation: with
``grad_accum_steps: N`` one iteration runs ``train_step`` on N batches, :meth:`optimize`
back-propagates ``loss / N`` each time and steps the optimizer after the last one (an
iteration then sees ``N * batch_size`` images per rank; the schedules count iterations).
"""
from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from src.data.datasets import build_dataset, collate_images
from src.data.sampler import ResumableSampler
from src.utils import dist
from src.utils.checkpoint import (UntrustedCheckpointError, atomic_torch_save, checkpoint_path, latest_checkpoint,
                                  list_checkpoints, load_file, parse_iter_tag, prune_checkpoints,
                                  remove_stale_temporaries, rng_state, set_rng_state)
from src.utils.config import Config, save_config
from src.utils.image_io import save_rgb
from src.utils.logger import WandbLogger, setup_logging
from src.trainer import sharding
from src.trainer.optim import build_scheduler, set_lr

log = logging.getLogger(__name__)
#: consecutive steps with a non-finite gradient (and a finite loss) after which training stops
MAX_SKIPPED_STEPS = 5


def mean_logs(rows: list) -> Dict[str, float]:
    """Per key, the mean of the micro-batches' logged scalars (one row: returned as is)."""
    if len(rows) == 1:
        return rows[0]
    keys = dict.fromkeys(k for row in rows for k in row)
    return {k: sum(float(r[k]) for r in rows if k in r) / sum(k in r for r in rows) for k in keys}


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the step was not applied."""


class BaseTrainer:
    def __init__(self, cfg: Config, exp_name: str, device: str = "cpu", use_wandb: bool = False,
                 debug: bool = False, auto_resume: bool = True, dry_run: bool = False,
                 load_from: Optional[int] = None):
        self.cfg = cfg
        self.exp_name = exp_name
        self.debug = debug
        self.dry_run = dry_run
        self.device = dist.init_distributed(device)
        self.is_main = dist.is_main_process()
        self.exp_dir = Path(cfg.get("ckpt_dir", "./checkpoint")) / exp_name
        setup_logging(None if dry_run else self.exp_dir / "train.log", debug, self.is_main)
        torch.manual_seed(int(cfg.get("seed", 0)) + dist.rank())

        self.amp, self.amp_dtype = self._amp_setting(cfg)
        self.channels_last = bool(cfg.get("channels_last", False))
        self.accum_steps = int(cfg.get("grad_accum_steps", 1) or 1)
        if self.accum_steps < 1:
            raise ValueError(f"grad_accum_steps must be >= 1, got {self.accum_steps}")
        self._micro = 0   # index of the current micro-batch within the iteration
        self.parallel = str(cfg.get("parallel", "ddp"))
        if self.parallel not in sharding.STRATEGIES:
            raise ValueError(f"parallel must be one of {sharding.STRATEGIES}, got {self.parallel!r}")
        self.sharded = self.parallel == "fsdp" and dist.is_distributed()
        self.model = self.build_model().to(self.device)
        self.net = self._wrap_ddp(self.model)
        self.optimizers = self.build_optimizers()
        self.schedulers = {name: build_scheduler(opt, cfg.optim.get(f"{name}_scheduler"))
                           for name, opt in self.optimizers.items()}
        # fp16 needs loss scaling; bf16 keeps float32's exponent range and needs none
        scaled = self.amp and self.amp_dtype == torch.float16
        self.scalers = {name: torch.amp.GradScaler("cuda", enabled=scaled) for name in self.optimizers}

        self.start_iter = 0
        self._wandb_run_id: Optional[str] = None   # the run a resumed checkpoint logged to
        self._stop_signal: Optional[int] = None
        self._skipped_steps: Dict[str, int] = {}
        if self.is_main and not dry_run:
            remove_stale_temporaries(checkpoint_path(cfg.get("ckpt_dir", "./checkpoint"), exp_name, 0).parent)
        if load_from is not None:
            self._resume(at=int(load_from))   # --load_from ITER: this checkpoint, or an error
            resumed = True
        else:
            resumed = auto_resume and not dry_run and self._resume()
        if not resumed and cfg.get("load_checkpoint"):
            self._load_previous_step(cfg.load_checkpoint)
        self.train_loader = self._build_loader()
        self.eval_dataset = self._build_eval_dataset()
        self.wandb = WandbLogger(use_wandb and self.is_main and not dry_run, cfg.get("project_name", "dc_vic"),
                                 exp_name, cfg.to_dict(), self.exp_dir, run_id=self._wandb_run_id)
        if self.is_main and not dry_run:
            save_config(cfg, self.exp_dir / "config.yaml")
        n_train = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        log.info("experiment %s: %s, %.2fM trainable parameters, device %s, world size %d, start iter %d",
                 exp_name, type(self.model).__name__, n_train / 1e6, self.device, dist.world_size(), self.start_iter)

    # ------------------------------------------------------------------ hooks
    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def build_optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def train_step(self, batch: Dict[str, Any], it: int) -> Dict[str, float]:
        raise NotImplementedError

    def validate(self, it: int) -> Dict[str, float]:
        return {}

    def checkpoint_modules(self) -> Dict[str, nn.Module]:
        """Modules saved in a checkpoint, by key (GAN trainers add ``discriminator``)."""
        return {"comp_model": self.model}

    # ---------------------------------------------------------------- the loop
    def train(self) -> int:
        """Run from ``start_iter`` to ``total_iter``; return the last completed iteration."""
        cfg = self.cfg
        total = 1 if self.dry_run else int(cfg.total_iter)
        log_step = 1 if self.debug else int(cfg.get("log_step", 100))
        eval_step, save_step = cfg.get("eval_step"), int(cfg.get("save_step", 5000))
        it = self.start_iter
        data_iter = iter(self.train_loader)
        pbar = tqdm(total=total, initial=it, disable=not self.is_main, dynamic_ncols=True, mininterval=2.0,
                    desc=self.exp_name)
        data_time = step_time = 0.0
        previous = self._install_signal_handlers()
        try:
            while it < total and self._stop_signal is None:
                t0 = time.perf_counter()
                self.model.train()
                micro_logs = []
                for self._micro in range(self.accum_steps):
                    t1 = time.perf_counter()
                    batch = self._to_device(next(data_iter))
                    data_time += time.perf_counter() - t1
                    micro_logs.append(self.train_step(batch, it))
                logs = mean_logs(micro_logs)
                self._step_schedulers(it)
                it += 1
                step_time += time.perf_counter() - t0
                pbar.update(1)
                if it % log_step == 0 or it == total:
                    logs = dist.all_reduce_scalars(logs)   # every rank takes part; rank 0 logs
                    logs["lr"] = self.optimizers["g"].param_groups[0]["lr"] if "g" in self.optimizers else 0.0
                    logs["data_share"] = data_time / max(step_time, 1e-9)
                    self._log(logs, it, pbar)
                    data_time = step_time = 0.0
                if eval_step and (it % int(eval_step) == 0 or it == total):
                    self._run_validation(it)
                if not self.dry_run and (it % save_step == 0 or it == total):
                    self.save_checkpoint(it)
        except NonFiniteLossError as e:
            log.error("stopping at iteration %d: %s; the last good checkpoint is kept", it + 1, e)
            raise
        finally:
            self._restore_signal_handlers(previous)
            pbar.close()
        if self._stop_signal is not None:
            log.warning("received signal %d: saving iteration %d and exiting", self._stop_signal, it)
            if not self.dry_run:
                self.save_checkpoint(it)
        self.wandb.finish()
        return it

    # ----------------------------------------------------------- step helpers
    def schedule_steps(self, name: str, it: int) -> Optional[bool]:
        """Whether optimizer ``name``'s schedule advances after iteration ``it`` because the
        optimizer stepped in it (a GAN trainer: D from ``disc_start`` on), or None: the schedule
        counts every iteration from 0 (the default)."""
        return None

    def _step_schedulers(self, it: int) -> None:
        """Advance the schedules after iteration ``it``. A schedule that :meth:`schedule_steps`
        governs advances with its optimizer's steps. The others count iterations, not optimizer
        steps, so an optimizer that has not stepped yet (a D that starts late, a skipped non-finite
        step) is still on schedule when it starts; torch's warning about that order is silenced for
        those only."""
        for name, scheduler in self.schedulers.items():
            steps = self.schedule_steps(name, it)
            if steps is not None:
                if steps:
                    scheduler.step()
                continue
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before "
                                        r"`optimizer\.step\(\)`", category=UserWarning)
                scheduler.step()

    def _amp_setting(self, cfg: Config):
        """``amp`` (autocast on) and ``amp_dtype`` (bf16 on CPU or CUDA, fp16 on CUDA only)."""
        dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
        name = cfg.get("amp_dtype", "bf16")
        if name not in dtypes:
            raise ValueError(f"amp_dtype must be bf16 or fp16, got {name!r}")
        amp = bool(cfg.get("amp", False))
        if amp and name == "fp16" and self.device.type != "cuda":
            raise ValueError(f"amp_dtype fp16 needs a CUDA device (this run is on {self.device.type}); use bf16")
        return amp, dtypes[name]

    def autocast(self):
        """The forward passes' precision: ``amp_dtype`` autocast when ``amp`` is on (losses stay float32)."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    @staticmethod
    def check_finite(terms: Dict[str, torch.Tensor]) -> None:
        for name, value in terms.items():
            if isinstance(value, torch.Tensor) and not torch.isfinite(value.detach()).all():
                raise NonFiniteLossError(f"loss term '{name}' is {value.detach().float().mean().item()}")

    def optimize(self, name: str, loss: torch.Tensor, params: Optional[Iterable[nn.Parameter]] = None,
                 clip: Optional[float] = None) -> bool:
        """zero_grad -> backward -> (unscale, clip) -> step, for optimizer ``name``; True when the
        optimizer stepped. With gradient accumulation the gradients of ``loss / grad_accum_steps``
        add up over the iteration's micro-batches and only the last one steps."""
        opt, scaler = self.optimizers[name], self.scalers[name]
        if self._micro == 0:
            opt.zero_grad(set_to_none=True)
        scaler.scale(loss / self.accum_steps if self.accum_steps > 1 else loss).backward()
        if self._micro < self.accum_steps - 1:
            return False
        params = list(params) if params is not None else [p for g in opt.param_groups for p in g["params"]]
        if clip:
            scaler.unscale_(opt)
            norm = torch.nn.utils.clip_grad_norm_(params, clip)
        elif not scaler.is_enabled():
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if not scaler.is_enabled():
            norm = sharding.full_value(norm)   # FSDP: a DTensor over the shards
        if not scaler.is_enabled() and not torch.isfinite(norm):
            # a finite loss with a non-finite gradient: never applied (the AMP scaler skips these itself)
            opt.zero_grad(set_to_none=True)
            skipped = self._skipped_steps[name] = self._skipped_steps.get(name, 0) + 1
            log.warning("optimizer %s: non-finite gradient (norm %s) with a finite loss; step skipped (%d in a row)",
                        name, norm.item(), skipped)
            if skipped >= MAX_SKIPPED_STEPS:
                raise NonFiniteLossError(f"optimizer {name}: {skipped} steps in a row had non-finite gradients; "
                                         "the last good checkpoint is kept")
            return False
        self._skipped_steps[name] = 0
        scaler.step(opt)
        scaler.update()
        return True

    def save_samples(self, it: int, images: Dict[str, torch.Tensor]) -> None:
        """Write ``{name: 3xHxW in [-1,1]}`` under ``samples/iter_<it>/`` and to wandb (not in a dry run)."""
        if not self.is_main or self.dry_run:
            return
        folder = self.exp_dir / "samples" / f"iter_{it}"
        for name, img in images.items():
            save_rgb(img, folder / f"{name}.png")
        self.wandb.log_images({f"samples/{k}": (v.clamp(-1, 1) + 1).mul(127.5).byte().permute(1, 2, 0).cpu().numpy()
                               for k, v in images.items()}, it)

    # ------------------------------------------------------------ checkpoints
    def before_save(self) -> None:
        """Bring state derived from the weights up to date before a checkpoint is written (no-op)."""

    def save_checkpoint(self, it: int) -> Optional[Path]:
        self.before_save()   # on every rank: buffers must keep one shape across DDP ranks
        modules = self.checkpoint_modules()
        # FSDP: every rank takes part in gathering the whole tensors, rank 0 gets them
        state = {name: sharding.module_state(m, rank0_only=True) for name, m in modules.items()}
        optimizers = {k: sharding.optimizer_state(o, sharding.owner_of(o, modules) if self.sharded else self.model)
                      for k, o in self.optimizers.items()}
        if not self.is_main:
            dist.barrier()
            return None
        state.update({
            "optimizers": optimizers,
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scalers": {k: s.state_dict() for k, s in self.scalers.items()},
            "iter": it, "rng": rng_state(), "config": self.cfg.to_dict(),
            "wandb_run_id": self.wandb.run_id or self._wandb_run_id,
        })
        path = checkpoint_path(self.cfg.get("ckpt_dir", "./checkpoint"), self.exp_name, it)
        atomic_torch_save(state, path)
        prune_checkpoints(self.cfg.get("ckpt_dir", "./checkpoint"), self.exp_name, self.cfg.get("keep_step", []),
                          self.cfg.get("keep_every"), newest=it)
        log.info("saved %s", path)
        dist.barrier()
        return path

    def _resume(self, at: Optional[int] = None) -> bool:
        """Resume from the newest readable checkpoint (a corrupt newer one is skipped with a warning),
        or, with ``at``, from the checkpoint of that iteration: model, EMA, discriminator, optimizers,
        schedules, RNG and data position, so the run continues as the original one did. Checkpoints
        after ``at`` are replaced (and pruned by the keep policy) as the run passes them."""
        found = list_checkpoints(self.cfg.get("ckpt_dir", "./checkpoint"), self.exp_name)
        if at is not None:
            if at not in found:
                folder = Path(self.cfg.get("ckpt_dir", "./checkpoint")) / self.exp_name / "model"
                have = ", ".join(str(k) for k in found) or "none"
                raise FileNotFoundError(f"--load_from {at}: experiment {self.exp_name!r} has no checkpoint of "
                                        f"iteration {at} in {folder} (iterations there: {have})")
            later = [k for k in found if k > at]
            if later:
                log.warning("resuming at iteration %d; the later checkpoints %s will be replaced or pruned as the "
                            "run passes them", at, later)
            found = {at: found[at]}
        if not found:
            return False
        for it in sorted(found, reverse=True):
            path = found[it]
            try:
                ckpt = load_file(path, map_location="cpu")
                break
            except UntrustedCheckpointError:
                raise
            except RuntimeError as e:
                log.warning("cannot resume from %s (%s); trying the checkpoint before it", path, e)
        else:
            raise RuntimeError(f"none of the {len(found)} checkpoints of {self.exp_name} in "
                               f"{path.parent} can be read; move them away to start from scratch")
        modules = self.checkpoint_modules()
        for name, module in modules.items():
            sharding.load_module_state(module, ckpt[name], strict=True, source=f"{path}:{name}")
        for k, opt in self.optimizers.items():
            if k in ckpt.get("optimizers", {}):
                owner = sharding.owner_of(opt, modules) if self.sharded else self.model
                sharding.load_optimizer_state(opt, owner, ckpt["optimizers"][k])
        for group in ("schedulers", "scalers"):
            for k, obj in getattr(self, group).items():
                if k in ckpt.get(group, {}):
                    obj.load_state_dict(ckpt[group][k])
        if self.cfg.optim.get("reset_lr_on_resume"):  # a restart with a new --lr takes it
            for name in self.optimizers:
                self._set_base_lr(name, float(self.cfg.optim[f"{name}_optimizer"]["lr"]))
        set_rng_state(ckpt["rng"])
        if dist.rank() > 0:
            torch.manual_seed(int(self.cfg.get("seed", 0)) + dist.rank() + int(ckpt["iter"]))
        self.start_iter = int(ckpt["iter"])
        # checkpoints written before run ids were stored logged to the run named like the experiment
        self._wandb_run_id = ckpt.get("wandb_run_id", self.exp_name)
        log.info("resumed from %s (iteration %d)", path, self.start_iter)
        return True

    def _set_base_lr(self, name: str, lr: float) -> None:
        """A new base learning rate for optimizer ``name`` and its scheduler."""
        set_lr(self.optimizers[name], lr)
        self.schedulers[name].base_lrs = [lr] * len(self.schedulers[name].base_lrs)
        log.info("%s learning rate set to %g", name, lr)

    def _previous_step_path(self, spec: dict) -> Path:
        """The checkpoint ``load_checkpoint`` names: ``iter``, or the latest of ``exp``."""
        ckpt_dir = self.cfg.get("ckpt_dir", "./checkpoint")
        if spec.get("iter") is not None:
            return checkpoint_path(ckpt_dir, spec["exp"], parse_iter_tag(spec["iter"]))
        path = latest_checkpoint(ckpt_dir, spec["exp"])
        if path is None:
            raise FileNotFoundError(f"load_checkpoint: no checkpoint of experiment {spec['exp']!r} under "
                                    f"{Path(ckpt_dir) / spec['exp'] / 'model'}")
        return path

    def _load_previous_step(self, spec: dict) -> None:
        """``load_checkpoint: {exp, iter, strict, load_optimizer, load_scheduler, load_discriminator,
        new_g_lr, new_d_lr}``."""
        path = self._previous_step_path(spec)
        ckpt = load_file(path, map_location="cpu")
        strict = bool(spec.get("strict", True))
        sharding.load_module_state(self.model, ckpt["comp_model"], strict=strict, source=str(path))
        modules = self.checkpoint_modules()
        if spec.get("load_discriminator") and "discriminator" in modules:
            sharding.load_module_state(modules["discriminator"], ckpt["discriminator"], strict=strict,
                                       source=f"{path}:D")
        if spec.get("load_optimizer"):
            for k, opt in self.optimizers.items():
                if k in ckpt.get("optimizers", {}):
                    owner = sharding.owner_of(opt, modules) if self.sharded else self.model
                    sharding.load_optimizer_state(opt, owner, ckpt["optimizers"][k])
        if spec.get("load_scheduler"):
            for k, sch in self.schedulers.items():
                if k in ckpt.get("schedulers", {}):
                    sch.load_state_dict(ckpt["schedulers"][k])
        for name in ("g", "d"):
            if spec.get(f"new_{name}_lr") is not None and name in self.optimizers:
                self._set_base_lr(name, float(spec[f"new_{name}_lr"]))
        log.info("loaded %s from %s (strict=%s)", spec["exp"], path, strict)

    # ------------------------------------------------------------------ data
    def _build_loader(self) -> DataLoader:
        dcfg = self.cfg.dataset
        dataset = build_dataset(dcfg.train_dataset, train=True)
        batch = int(dcfg.batch_size)
        sampler = ResumableSampler(len(dataset), seed=int(self.cfg.get("seed", 0)),
                                   start_position=self.start_iter * self.accum_steps * batch * dist.world_size(),
                                   rank=dist.rank(), world_size=dist.world_size())
        workers = int(dcfg.get("num_workers", 0))
        g = torch.Generator()
        g.manual_seed(int(self.cfg.get("seed", 0)))
        return DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True,
                          collate_fn=collate_images, pin_memory=self.device.type == "cuda", generator=g,
                          persistent_workers=workers > 0)

    def _build_eval_dataset(self):
        ecfg = self.cfg.dataset.get("eval_dataset")
        if not ecfg or not self.cfg.get("eval_step"):
            return None
        return build_dataset(ecfg, train=False)

    def _to_device(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        out = {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
               for k, v in batch.items()}
        if self.channels_last:
            out = {k: v.contiguous(memory_format=torch.channels_last) if isinstance(v, torch.Tensor) and v.ndim == 4
                   else v for k, v in out.items()}
        return out

    # -------------------------------------------------------------- internals
    def _wrap_ddp(self, model: nn.Module, shardable: bool = True) -> nn.Module:
        """``model`` as the loop runs it: channels_last weights when configured, DDP (or, with
        ``parallel: fsdp`` and ``shardable``, sharded in place) when distributed."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if not dist.is_distributed():
            return model
        if self.sharded and shardable:
            return sharding.shard(model)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                                   find_unused_parameters=bool(self.cfg.get("ddp_find_unused", True)))

    def _run_validation(self, it: int) -> None:
        # a sharded model's forward is a collective: under FSDP every rank validates, rank 0 reports
        if (not self.is_main and not self.sharded) or self.eval_dataset is None:
            dist.barrier()
            return
        self.model.eval()
        with torch.no_grad():
            metrics = self.validate(it)
        self.model.train()
        if not self.is_main:
            dist.barrier()
            return
        if metrics:
            log.info("validation @%d: %s", it, "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            self.wandb.log({f"val/{k}": v for k, v in metrics.items()}, it)
        dist.barrier()

    def _log(self, logs: Dict[str, float], it: int, pbar) -> None:
        if not self.is_main:
            return
        clean = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}
        pbar.set_postfix({k: f"{v:.4g}" for k, v in list(clean.items())[:4]})
        log.info("iter %d: %s", it, "  ".join(f"{k} {v:.4g}" for k, v in clean.items()))
        self.wandb.log({f"train/{k}": v for k, v in clean.items()}, it)

    def _install_signal_handlers(self):
        def handler(signum, frame):
            self._stop_signal = signum

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass
        return previous

    @staticmethod
    def _restore_signal_handlers(previous) -> None:
        for sig, h in previous.items():
            signal.signal(sig, h)
