"""Which unit tokenizer a decoder was trained on, and text -> units until the generator exists.

A unit decoder is only meaningful with the codebook it was trained on, so its weights record the
tokenizer's identity: ``units:<card>:<sha256[:12] of the codebook file>`` for the project's
`agent.units` tokenizer, or ``tmp-whisper-k500-<digest>`` for the TEMPORARY tokenizer of
`agent.tts_units_tmp` (used while `agent.units` had no fitted codebook).

`TextToUnits` makes units for text the way the agent will get them before the unit generator is
wired in: render the text with the reference Piper voice, then tokenize that audio.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from configs.schema import AgentConfig

TMP_PREFIX = "tmp-whisper"
TMP_CODEBOOK = "weights/tts_tmp_units.safetensors"
"""Where a decoder trained on temporary units ships their codebook (relative to agent/)."""


class UnitSource(Protocol):
    def extract(self, audio: np.ndarray, rate: int = 16000) -> np.ndarray: ...


def _sha12(path: Path) -> str:
    from agent.assets import sha256_file

    return sha256_file(path)[:12]


def project_tokenizer(cfg: AgentConfig) -> tuple[UnitSource, str]:
    """The project's tokenizer (`agent.units`) and its identity; ImportError/other errors if absent."""
    from agent.units import codebook_path, load_unit_tokenizer  # type: ignore[import-not-found]

    tok = load_unit_tokenizer(cfg.units)
    return tok, f"units:{cfg.units.card}:{_sha12(codebook_path(cfg.units.card))}"


def tmp_codebook_path() -> Path:
    from importlib import resources

    return Path(str(resources.files("agent").joinpath(TMP_CODEBOOK)))


def tokenizer_for(identity: str, cfg: AgentConfig, tmp_path: str | Path | None = None) -> UnitSource:
    """The tokenizer a decoder with this recorded identity needs (one-line error if unavailable)."""
    if identity.startswith(TMP_PREFIX):
        from agent.tts_units_tmp import TemporaryWhisperUnits

        path = Path(tmp_path) if tmp_path else tmp_codebook_path()
        if not path.is_file():
            raise FileNotFoundError(f"temporary unit codebook {path} missing (the decoder was trained on it)")
        tok = TemporaryWhisperUnits.load(path)
        if tok.identity != identity:
            raise ValueError(f"unit codebook {path} is {tok.identity}, the decoder was trained on {identity}")
        return tok
    tok, got = project_tokenizer(cfg)
    if got != identity:
        raise ValueError(f"the decoder was trained on units {identity} but {cfg.units.card} is {got}; retrain it "
                         "(duplex-agent train tts)")
    return tok


class TextToUnits:
    """Text -> 25 Hz units through the reference voice (stands in for the unit generator)."""

    def __init__(self, voice, tokenizer: UnitSource) -> None:
        self.voice, self.tokenizer = voice, tokenizer

    def __call__(self, text: str, seed: int = 0) -> np.ndarray:
        syn = self.voice.render(text, seed=seed)
        return self.tokenizer.extract(syn.audio, syn.sample_rate)
