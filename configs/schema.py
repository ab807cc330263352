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
    units: UnitsConfig = field(default_factory=lambda: UnitsConfig())
    """The 25 Hz speech-unit tokenizer."""
    generator: GeneratorConfig = field(default_factory=lambda: GeneratorConfig())
    """The SyncLLM-style interleaved unit generator."""
    units_train: UnitTrainConfig = field(default_factory=lambda: UnitTrainConfig())
    """Training of the unit generator (three stages)."""


@dataclass(kw_only=True)
class UnitsConfig:
    card: str = "units-whisper-500"
    """Unit codebook: a card name (configs/cards), a card YAML, or a codebook .safetensors file."""
    chunk_ms: int = 160
    """Streaming extraction chunk (a multiple of 40 ms); units come out at 25 Hz either way."""
    num_threads: int = 1
    """torch threads for unit extraction (0 keeps torch's default)."""


@dataclass(kw_only=True)
class GeneratorConfig:
    card: str = "unit-generator-default"
    """Trained unit generator: a card name, a card YAML, or a checkpoint .safetensors file."""
    predict_user: bool = True
    """Fill user chunks that have not arrived with the model's prediction (SyncLLM); False fills silence."""
    temperature: float = 0.7
    """Sampling temperature of agent and predicted-user units (0 = greedy)."""
    top_k: int = 20
    """Sample among the k most likely allowed tokens (0 = all)."""
    max_context: int = 2048
    """KV-cache slots of one session."""
    compact_to: int = 1536
    """When the cache is nearly full, keep this many most recent slots."""
    num_threads: int = 1
    """torch threads for the generator (0 keeps torch's default)."""
    seed: int = 0
    """Seed of a session's sampler."""


@dataclass(kw_only=True)
class UnitTrainConfig:
    """The three SyncLLM training stages of the unit generator (training/units_stage*.py)."""

    data_dir: str = "/work/data/default"
    """Synthetic corpus (manifest + audio) the stages read."""
    cache_dir: str = "~/.cache/duplex-agent/units-train"
    """Extracted units, LLM reply vectors and packed sequences (reused across runs)."""
    out_dir: str = "runs/units"
    """Checkpoints, loss curves (CSV + PNG) per stage."""
    chunk_ms: int = 160
    """Chunk of the interleaved format (160, 200 or 240 ms)."""
    d_model: int = 256
    """Generator width."""
    num_layers: int = 4
    """Generator blocks."""
    num_heads: int = 4
    """Generator attention heads."""
    ffn_mult: int = 4
    """Feed-forward width multiple."""
    use_hidden: bool = True
    """Condition on the LLM's hidden states besides its token embeddings."""
    text_lookahead: int = 2
    """Words of reply text read ahead of the word being spoken."""
    dropout: float = 0.1
    """Dropout in training."""
    max_len: int = 1024
    """Longest training sequence in tokens (longer dialogues are cut into windows)."""
    batch_tokens: int = 8192
    """Tokens per optimizer step (per process)."""
    lr: float = 1e-3
    """Peak learning rate (AdamW, warmup then cosine)."""
    warmup_steps: int = 100
    """Linear warmup steps."""
    stage1_steps: int = 2000
    """Optimizer steps of stage 1 (turn-based dialogues)."""
    stage2_steps: int = 1500
    """Optimizer steps of stage 2 (full-duplex format without overlap)."""
    stage3_steps: int = 1500
    """Optimizer steps of stage 3 (overlaps, backchannels, interruptions)."""
    eval_every: int = 250
    """Steps between held-out loss evaluations and checkpoints."""
    max_dialogues: int = 0
    """Use at most this many dialogues per split (0 = all)."""
    num_threads: int = 2
    """torch threads per training process."""
    seed: int = 0
    """Seed of initialisation and batching."""
