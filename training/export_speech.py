"""Export trained speech-input weights as the bundled checkpoint: fp16 safetensors + its card.

    python -m training.export_speech --weights runs/stage3/final.safetensors --name speech-input-default

writes ``agent/weights/<name>.safetensors`` (fp16: half the bytes, the model loads it into fp32)
and ``configs/cards/<name>.yaml`` (kind ``bundled``, sha256 of the file). The frozen LLM is never
part of these files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml

from agent.assets import sha256_file
from agent.llm import load_llm
from agent.speech_input import build_speech_input
from agent.speech_weights import load_weights, read_metadata, save_weights
from configs import load_config

REPO = Path(__file__).resolve().parents[1]


def export(weights: str | Path, name: str, preset: str = "default", overrides: list[str] | None = None,
           repo: Path = REPO, description: str = "") -> tuple[Path, Path]:
    cfg = load_config(preset, overrides or [])
    llm = load_llm(cfg.llm)
    speech = build_speech_input(cfg.speech, llm, load_weights=False, init_pretrained=False)
    load_weights(speech, weights, strict_keys=True)
    meta = read_metadata(weights)
    out = repo / "agent" / "weights" / f"{name}.safetensors"
    save_weights(speech, out, meta={"name": name, "preset": preset, "llm": cfg.llm.card, "trained": meta},
                 dtype=torch.float16)
    card = {
        "name": name,
        "role": "speech-input",
        "family": "speech-input",
        "license": "MIT (encoder initialised from Whisper tiny.en, MIT); trained here",
        "format": "safetensors",
        "source": {"kind": "bundled", "file": f"weights/{name}.safetensors", "sha256": sha256_file(out)},
        "prepare": "none",
        "preset": preset,
        "llm": cfg.llm.card,
        "doc": f"agent/weights/{name}.md",
    }
    card_path = repo / "configs" / "cards" / f"{name}.yaml"
    header = (f"# Trained speech input (encoder, adapter, prompt, state head) for the `{preset}` preset and the "
              f"frozen {cfg.llm.card}.\n# How it was trained (data, exact commands, figures): agent/weights/{name}.md\n")
    card_path.write_text(header + yaml.safe_dump(card, sort_keys=False))
    return out, card_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="trained speech weights (.safetensors, e.g. a stage-3 final)")
    p.add_argument("--name", default="speech-input-default")
    p.add_argument("--preset", default="default")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args(argv)
    out, card = export(args.weights, args.name, args.preset, args.overrides)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and {card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
