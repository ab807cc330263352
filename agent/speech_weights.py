"""Save / load the speech-input weights (safetensors), and the bundled trained checkpoint by card.

Only ``SpeechInput``'s own tensors are ever written (encoder, adapter, CTC head, prompt, speaking
vector, state head): the frozen LLM is not part of that module, so it cannot end up in a file.
Bundled weights are fp16 to keep the repository small; they load into the fp32 model.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from agent.assets import AssetError, check_source, load_card
from agent.speech_input import SpeechInput


def save_weights(speech: SpeechInput, path: str | Path, meta: dict | None = None, dtype: torch.dtype | None = None,
                 prefixes: tuple[str, ...] | None = None) -> Path:
    """Atomically write ``speech``'s tensors (optionally only names under ``prefixes``, cast to ``dtype``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, t in speech.state_dict().items():
        if prefixes and not name.startswith(prefixes):
            continue
        t = t.detach().cpu()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        tensors[name] = t.contiguous()
    metadata = {"format": "duplex-agent/speech-input", **{k: json.dumps(v) for k, v in (meta or {}).items()}}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_weights(speech: SpeechInput, path: str | Path, strict_keys: bool = False,
                 fresh_if_reshaped: tuple[str, ...] = ()) -> list[str]:
    """Load tensors from ``path`` into ``speech`` (cast to its dtypes). Returns the names loaded.

    A file may hold a subset (e.g. a stage-1 checkpoint has no state head); shapes must match,
    except for names under ``fresh_if_reshaped``, which keep their fresh values when the shape
    differs (a stage that trains a part from scratch, e.g. a wider state head, from an init file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no speech-input weights at {path}")
    tensors = load_file(str(path))
    own = speech.state_dict()
    if fresh_if_reshaped:
        tensors = {k: v for k, v in tensors.items()
                   if not (k.startswith(fresh_if_reshaped) and k in own and tuple(v.shape) != tuple(own[k].shape))}
    unknown = [k for k in tensors if k not in own]
    if unknown:
        raise AssetError(f"{path}: tensors {unknown[:3]} do not belong to this speech input (config mismatch?)")
    bad = [k for k, v in tensors.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise AssetError(f"{path}: {k} has shape {tuple(tensors[k].shape)}, model expects {tuple(own[k].shape)} "
                         "(trained for another preset, or another speech.state_head.context_chunks?)")
    if strict_keys:
        missing = [k for k in own if k not in tensors]
        if missing:
            raise AssetError(f"{path}: missing {missing[:3]}")
    with torch.no_grad():
        for k, v in tensors.items():
            own[k].copy_(v.to(own[k].dtype))
    return list(tensors)


def read_metadata(path: str | Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    return {k: (json.loads(v) if k != "format" else v) for k, v in meta.items()}


def load_bundled(speech: SpeechInput, card_name: str) -> None:
    """Load the committed checkpoint named by a ``bundled`` card (sha256 checked)."""
    card = load_card(card_name, family="speech-input", role="speech-input")
    if card.kind not in ("bundled", "local"):
        raise AssetError(f"card {card_name!r}: speech-input weights must be bundled or local, not {card.kind}")
    path = check_source(card)
    load_weights(speech, path, strict_keys=True)
