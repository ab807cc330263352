"""Which unit tokenizer a decoder was trained on, and text -> units through the reference voice.

A unit decoder is only meaningful with the codebook it was trained on, so its weights record the
tokenizer's identity: ``units:<card>:<sha256[:12] of the codebook file>``.

`TextToUnits` makes units for text without the unit generator (benchmarks, `say`, the emotion
demo): render the text with the reference Piper voice, then tokenize that audio, so the decoder
is measured on its own, not on the generator's mistakes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from configs.schema import AgentConfig


class UnitSource(Protocol):
    def extract(self, audio: np.ndarray, rate: int = 16000) -> np.ndarray: ...


def _sha12(path: Path) -> str:
    from agent.assets import sha256_file

    return sha256_file(path)[:12]


def project_tokenizer(cfg: AgentConfig) -> tuple[UnitSource, str]:
    """The project's tokenizer (`agent.units`) and its identity; raises if its codebook is missing."""
    from agent.units import codebook_path, load_unit_tokenizer

    tok = load_unit_tokenizer(cfg.units)
    return tok, f"units:{cfg.units.card}:{_sha12(codebook_path(cfg.units.card))}"


def tokenizer_for(identity: str, cfg: AgentConfig) -> UnitSource:
    """The project tokenizer, checked to be the one a decoder with this identity was trained on."""
    tok, got = project_tokenizer(cfg)
    if got != identity:
        raise ValueError(f"the decoder was trained on units {identity} but {cfg.units.card} is {got}; retrain it "
                         "(duplex-agent train tts)")
    return tok


class TextToUnits:
    """Text -> 25 Hz units through the reference voice (the decoder measured without the generator)."""

    def __init__(self, voice, tokenizer: UnitSource) -> None:
        self.voice, self.tokenizer = voice, tokenizer

    def __call__(self, text: str, seed: int = 0) -> np.ndarray:
        syn = self.voice.render(text, seed=seed)
        return self.tokenizer.extract(syn.audio, syn.sample_rate)
