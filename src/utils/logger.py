"""Logging to the console, a file beside the checkpoints, and (optionally) Weights & Biases."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(log_file: Optional[Path] = None, debug: bool = False, main_process: bool = True) -> None:
    """Configure the root logger once: console on every rank (warnings only off rank 0), file on rank 0."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_dcvic", False):
            root.removeHandler(h)
            h.close()
    level = logging.DEBUG if debug else logging.INFO
    root.setLevel(level)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level if main_process else logging.WARNING)
    console.setFormatter(logging.Formatter(FORMAT, "%H:%M:%S"))
    console._dcvic = True  # type: ignore[attr-defined]
    root.addHandler(console)
    if log_file is not None and main_process:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file)
        fh.setFormatter(logging.Formatter(FORMAT))
        fh.setLevel(level)
        fh._dcvic = True  # type: ignore[attr-defined]
        root.addHandler(fh)


class WandbLogger:
    """Thin wrapper: does nothing unless enabled; runs offline when no API key is configured.

    wandb writes under ``<directory>/wandb/`` (give the experiment folder). ``run_id`` continues that
    run (a resumed training passes the id its checkpoint stores); None starts a new run with a new
    id, so that a fresh start of an experiment is a run of its own. :attr:`run_id` is the id in use.
    """

    def __init__(self, enabled: bool, project: str, name: str, config: Dict[str, Any], directory: Path,
                 run_id: Optional[str] = None):
        self.run = None
        if not enabled:
            return
        import wandb

        if not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
            has_netrc = (Path.home() / ".netrc").is_file()
            if not has_netrc:
                logging.getLogger(__name__).warning("no wandb API key found: logging offline to %s",
                                                    directory / "wandb")
                os.environ["WANDB_MODE"] = "offline"
        directory.mkdir(parents=True, exist_ok=True)
        resume = {"id": run_id, "resume": "allow"} if run_id else {}
        self.run = wandb.init(project=project, name=name, config=config, dir=str(directory), **resume)

    @property
    def run_id(self) -> Optional[str]:
        return None if self.run is None else self.run.id

    def log(self, data: Dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log(data, step=step)

    def log_images(self, images: Dict[str, Any], step: int) -> None:
        if self.run is not None:
            import wandb

            self.run.log({k: wandb.Image(v) for k, v in images.items()}, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
