"""GGUF causal LM -> dense safetensors directory (transformers layout).

transformers dequantizes GGUF on every load (11-15 s for SmolLM2-135M); doing it once and saving
dense weights makes later loads take well under a second.
"""

from __future__ import annotations

from pathlib import Path

from agent.assets.cards import ModelCard

VERSION = 1


def convert(card: ModelCard, src: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    # The weights are dense now; without this, save_pretrained writes a GGUF quantization config
    # that makes the next load try to dequantize again.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = card.name
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
