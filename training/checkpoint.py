"""Resumable training checkpoints: trained weights + optimiser state, written atomically.

Shared by the speech-input recipes (``save_checkpoint``/``resume``) and the unit generator's
(``save_step_dir``/``latest_checkpoint``/``load_trainer_state`` with their own weights file).
Layout under a run directory::

    checkpoints/step-000200/speech.safetensors   the trained tensors only (never the frozen LLM)
    checkpoints/step-000200/trainer.pt           step, optimiser, sampler and RNG states
    checkpoints/latest                           name of the newest complete step directory

A step directory is written under a temporary name and renamed when complete; ``latest`` is
replaced atomically afterwards. A crash at any point leaves the previous checkpoint usable.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from agent.speech_input import SpeechInput


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_step_dir(run_dir: str | Path, step: int, write_weights: Callable[[Path], None],
                  optimizer: torch.optim.Optimizer, extra: dict[str, Any] | None = None, keep: int = 2) -> Path:
    """Write ``checkpoints/step-N`` (``write_weights(dir)`` + trainer.pt) under a temporary name,
    rename it, then move ``latest``; keep the newest ``keep`` step directories."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        write_weights(tmp)
        torch.save({"step": step, "optimizer": optimizer.state_dict(), "rng": _rng_state(), "extra": extra or {}},
                   tmp / "trainer.pt")
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pointer = root / ".latest.tmp"
    pointer.write_text(name + "\n")
    os.replace(pointer, root / "latest")
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_checkpoint(run_dir: str | Path, step: int, speech: SpeechInput, optimizer: torch.optim.Optimizer,
                    extra: dict[str, Any] | None = None, meta: dict | None = None, keep: int = 2) -> Path:
    from agent.speech_weights import save_weights

    return save_step_dir(
        run_dir, step, lambda d: save_weights(speech, d / "speech.safetensors", meta={"step": step, **(meta or {})}),
        optimizer, extra, keep)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if (path / "trainer.pt").is_file() else None


def load_trainer_state(path: Path, optimizer: torch.optim.Optimizer) -> tuple[int, dict[str, Any]]:
    """Restore the optimiser and RNG states of step directory ``path``: returns (step, extra)."""
    state = torch.load(path / "trainer.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    _set_rng_state(state["rng"])
    return int(state["step"]), dict(state.get("extra", {}))


def resume(run_dir: str | Path, speech: SpeechInput, optimizer: torch.optim.Optimizer) -> tuple[int, dict[str, Any]]:
    """Load the newest checkpoint of ``run_dir`` if any: returns (step, extra); (0, {}) when none."""
    from agent.speech_weights import load_weights

    path = latest_checkpoint(run_dir)
    if path is None:
        return 0, {}
    load_weights(speech, path / "speech.safetensors")
    return load_trainer_state(path, optimizer)


def lr_at(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up to ``peak`` then cosine decay to 10% of it at ``total``."""
    if step < warmup:
        return peak * (step + 1) / max(1, warmup)
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
