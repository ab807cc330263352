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
class DataConfig:
    """Synthetic spoken-dialogue data (training/data): how much, which voices, which timelines."""

    workers: int = 2
    """Worker processes for `data synth` (each single-threaded)."""
    sample_rate: int = 16000
    """Rate of dialogue audio and of what the encoder hears (utterances keep the voice's rate)."""
    chunk_seconds: float = 0.16
    """State-label chunk length (the encoder's chunk; the label contract in training/data/labels.py)."""
    agent_utterances: int = 1500
    """Single agent-voice utterances (neutral) for ASR, units and the TTS decoder."""
    user_utterances: int = 2500
    """Single user-voice utterances (augmented in train) for ASR."""
    qa_questions: int = 300
    """Questions answered by the frozen LLM (self-distillation targets for spoken QA)."""
    qa_voices_per_question: int = 2
    """User voices speaking each question."""
    qa_max_new_tokens: int = 40
    """Token cap on the LLM's answers (the runtime's cap, so targets match what it would say)."""
    turn_dialogues: int = 120
    """Stage-1 dialogues (SyncLLM stage 1): strictly turn-based, fixed short gaps."""
    duplex_dialogues: int = 240
    """Stage-2 dialogues: timed two-channel, natural gaps and mid-turn pauses, no overlap."""
    overlap_dialogues: int = 520
    """Stage-3 dialogues: overlaps, backchannels, barge-ins, side talk, noise, background speech."""
    dialogue_seconds: float = 45.0
    """Target length of one dialogue (turns are added until it is reached)."""
    emotion_texts: int = 300
    """Texts rendered in all five emotions by the agent voice."""
    emotion_other_voices: int = 12
    """Other voices (user voices) that also get emotional renderings (emotion-classifier data)."""
    emotion_texts_per_other_voice: int = 25
    """Texts per other voice in the emotion set."""
    gap_mean: float = 0.45
    """Mean gap (s) between the end of one speaker's turn and the start of the other's."""
    gap_std: float = 0.35
    """Spread (s) of turn gaps (normal distribution, clipped to [gap_min, gap_max])."""
    gap_min: float = -0.6
    """Smallest gap (s) in the overlap stage; negative = the next turn starts before the end."""
    gap_max: float = 2.0
    """Largest gap (s)."""
    turn_gap: float = 0.3
    """Fixed gap (s) of the turn-based stage."""
    pause_prob: float = 0.35
    """Probability that a user turn gets a mid-turn pause (stages 2 and 3)."""
    pause_min: float = 0.2
    """Shortest mid-turn pause (s)."""
    pause_max: float = 1.5
    """Longest mid-turn pause (s)."""
    backchannel_prob: float = 0.35
    """Probability of a user backchannel inside an agent turn (stage 3)."""
    bargein_prob: float = 0.2
    """Probability that a user turn barges in on the agent (stage 3)."""
    bargein_stop: float = 0.3
    """Seconds after a barge-in starts until the agent's audio stops in the scripted timeline."""
    side_talk_prob: float = 0.12
    """Probability of a line addressed to someone else before a user turn (stage 3)."""
    noise_burst_prob: float = 0.15
    """Probability of a cough/noise burst per turn (stage 3)."""
    background_prob: float = 0.12
    """Probability of background speech per turn (stage 3)."""
    heldout_voice_fraction: float = 0.25
    """Share of user voices kept out of training (they speak only the test split)."""
    val_text_fraction: float = 0.05
    """Share of text (conversations, questions, sentences) in the val split."""
    test_text_fraction: float = 0.07
    """Share of text in the test split (held-out text)."""
    augment_prob: float = 0.8
    """Probability that a train-split user recording is augmented (speed/pitch/gain/noise/reverb/Opus)."""


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
    data: DataConfig = field(default_factory=DataConfig)
    """Synthetic data (training/data): counts, voices, timelines, augmentation."""
    speech: SpeechConfig = field(default_factory=lambda: SpeechConfig())
    """Speech input: streaming encoder, adapter, state head, and their three training stages."""


@dataclass(kw_only=True)
class EncoderConfig:
    init_card: str = "whisper-tiny-en"
    """Whisper card the encoder starts from before training; "" = random init (tests)."""
    d_model: int = 384
    """Width of the encoder (must match the init card)."""
    layers: int = 4
    """Transformer layers."""
    heads: int = 6
    """Attention heads."""
    ffn_dim: int = 1536
    """Feed-forward width."""
    n_mels: int = 80
    """Log-mel bins (Whisper's 80)."""
    chunk_ms: int = 160
    """Streaming chunk = attention block, in ms (a multiple of 20 ms; 160 ms = 8 frames at 50 Hz)."""
    left_chunks: int = 12
    """Past chunks each frame may attend to (its own chunk always); bounds the KV ring buffers."""
    rotary_dims: int = 16
    """Per-head dims that get rotary position embeddings (relative positions for unbounded streams)."""
    rotary_base: float = 10000.0
    """Rotary frequency base."""
    mel_peak_init: float = 1.0
    """Initial running log10 peak of the mel normalisation (typical speech at a normal level)."""
    mel_peak_decay: float = 0.002
    """Running-peak decay per 10 ms frame, log10 units (0.002 = 2 dB per second)."""
    mel_dynamic_range: float = 8.0
    """log10 range kept below the running peak (Whisper's 80 dB)."""
    dropout: float = 0.1
    """Residual dropout while training."""


@dataclass(kw_only=True)
class AdapterConfig:
    stack: int = 4
    """Encoder frames stacked per LLM position (50 Hz / 4 = 12.5 Hz, 2 positions per 160 ms)."""
    hidden: int = 1024
    """Hidden width of the adapter MLP."""


@dataclass(kw_only=True)
class StateHeadConfig:
    hidden: int = 256
    """Hidden width of the state head MLP; 0 = a single linear layer."""
    prompt_len: int = 8
    """Trainable prompt embeddings before the speech (stage 3; steer the LLM from transcribing to answering)."""


@dataclass(kw_only=True)
class StageConfig:
    steps: int = 1000
    """Optimiser steps."""
    batch_size: int = 8
    """Examples per step (per process under torchrun)."""
    lr: float = 3e-4
    """Peak learning rate (AdamW, linear warm-up then cosine decay)."""
    warmup: int = 50
    """Warm-up steps."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    max_audio_s: float = 8.0
    """Utterances longer than this are skipped."""
    log_every: int = 10
    """Steps between loss-curve rows."""
    save_every: int = 50
    """Steps between checkpoints (also saved at the end)."""
    eval_every: int = 0
    """Steps between held-out evaluations (0 = only at the end)."""
    num_threads: int = 0
    """torch threads per process (0 = torch default)."""
    autocast_bf16: bool = True
    """Run the trainable modules' matmuls in bfloat16 (CPUs with AVX512-BF16/AMX: ~4x faster)."""
    llm_dtype: str = "bfloat16"
    """dtype of the frozen LLM while training (its weights never change; bf16 is ~4x faster on CPU)."""
    lr_scales: dict[str, float] = field(default_factory=dict)
    """Learning-rate multipliers by parameter-name prefix (e.g. {"adapter.": 5.0})."""


@dataclass(kw_only=True)
class AlignStageConfig(StageConfig):
    token_ctc_weight: float = 0.5
    """Weight of the auxiliary token-CTC loss (adapter outputs vs the LLM's embedding table)."""
    token_ctc_only_steps: int = 0
    """First steps train with the token-CTC loss only (no LLM pass: ~5x cheaper per step)."""
    char_ctc_weight: float = 0.0
    """Weight of stage 1's character CTC kept on the encoder (its head trains too when > 0)."""
    llm_batch: int = 0
    """Examples of each batch that also go through the LLM (0 = all; fewer = cheaper steps)."""


@dataclass(kw_only=True)
class SpeechConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """Chunked streaming speech encoder."""
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    """Encoder -> LLM embedding adapter."""
    state_head: StateHeadConfig = field(default_factory=StateHeadConfig)
    """Turn-taking state head and prompt embeddings."""
    weights_card: str = "speech-input-default"
    """Card of the trained encoder/adapter/prompt/state-head weights; "" = untrained (from init)."""
    transcribe_instruction: str = "Repeat exactly what I say:"
    """Text before the speech in stage 2 (ASR through the frozen LLM)."""
    stage1: StageConfig = field(default_factory=lambda: StageConfig(
        steps=1000, batch_size=8, lr=5e-4, warmup=60, eval_every=250, save_every=50))
    """Stage 1: encoder + CTC head on characters."""
    stage2: AlignStageConfig = field(default_factory=lambda: AlignStageConfig(
        steps=1200, batch_size=8, lr=2e-4, warmup=50, eval_every=300, save_every=50, lr_scales={"adapter.": 5.0},
        token_ctc_weight=0.5, token_ctc_only_steps=600))
    """Stage 2: encoder + adapter aligned to the frozen LLM (transcripts, plus token CTC); the new adapter
    learns 5x faster."""
    stage3: StageConfig = field(default_factory=lambda: StageConfig(
        steps=600, batch_size=8, lr=1e-3, warmup=30, eval_every=200, save_every=50))
    """Stage 3: prompt embeddings + state head (spoken QA + per-chunk state labels)."""
    state_loss_weight: float = 1.0
    """Weight of the state-label loss against the QA loss in stage 3."""
