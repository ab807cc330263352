"""Typed configuration of the agent.

Every field carries a one-line docstring (the string literal under it). Presets in
`configs.presets` build these objects; YAML files and ``--set key=value`` only override.
Later parts of the agent add their own sections here.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(kw_only=True)
class LLMConfig:
    card: str = "smollm2-135m-instruct"
    """Model card name (configs/cards/<name>.yaml), a hub id (``hub:org/name``) or a local dir."""
    dtype: str = "float32"
    """Compute dtype of the frozen LLM: float32 or bfloat16."""
    max_context: int = 2048
    """Slots in the preallocated KV cache of one session."""
    system_prompt: str = (
        "You are a friendly voice assistant. Reply with one short spoken sentence, "
        "no lists, no emojis."
    )
    """System prompt: the bundled LLM is small and rambles unless told to be brief."""
    max_new_tokens: int = 40
    """Cap on the reply length in tokens."""
    repetition_penalty: float = 1.2
    """Penalty on already generated tokens (>1 discourages loops)."""
    num_threads: int = 0
    """torch threads for LLM work; 0 keeps torch's default."""


@dataclass(kw_only=True)
class VoiceConfig:
    card: str = "piper-joe-medium"
    """Model card of the reference (teacher) voice."""
    length_scale: float = 1.0
    """Speaking-rate factor (>1 is slower)."""
    noise_scale: float = 0.667
    """VITS prior noise scale."""
    noise_w: float = 0.8
    """VITS duration-predictor noise scale."""
    espeak_voice: str = "en-us"
    """espeak-ng voice used to phonemize text for the Piper model."""


@dataclass(kw_only=True)
class JudgeConfig:
    card: str = "whisper-tiny-en"
    """Model card of the Whisper model used as the independent intelligibility judge."""
    beam_size: int = 5
    """Beam width of the judge's decoding."""
    num_threads: int = 2
    """CPU threads for the judge (CTranslate2)."""


@dataclass(kw_only=True)
class AgentConfig:
    preset: str = "default"
    """Name of the preset this config was built from."""
    seed: int = 0
    """Seed for anything random at construction time."""
    llm: LLMConfig = field(default_factory=LLMConfig)
    """The frozen LLM."""
    voice: VoiceConfig = field(default_factory=VoiceConfig)
    """The reference Piper voice (teacher for data and decoder)."""
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    """The Whisper judge."""
