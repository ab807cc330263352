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
class TTSConfig:
    """The streaming unit-to-waveform decoder and its emotion plugins (agent/tts.py)."""

    card: str = "tts-unit-decoder"
    """Trained front end + upsampler: a card name, card YAML or a .safetensors file (decoder from the voice)."""
    plugins: dict[str, str] = field(default_factory=lambda: {
        "happy": "tts-emotion-happy", "sad": "tts-emotion-sad",
        "angry": "tts-emotion-angry", "surprised": "tts-emotion-surprised",
    })
    """Emotion name -> plugin card (or .safetensors file); neutral is the decoder without plugin."""
    emotion: str = "neutral"
    """Emotion of utterances that do not ask for one."""
    chunk_units: int = 4
    """Units per streaming step (4 = 160 ms, the unit generator's chunk)."""
    num_threads: int = 1
    """torch threads for the decoder (0 keeps torch's default)."""


@dataclass(kw_only=True)
class TTSTrainConfig:
    """Training of the unit decoder (training/tts_neutral.py) and its plugins (training/tts_emotion.py)."""

    cache_dir: str = "~/.cache/duplex-agent/tts-train"
    """Piper renderings, latents and units (reused across runs)."""
    out_dir: str = "runs/tts"
    """Checkpoints, loss curves and reports."""
    units: str = "auto"
    """Unit tokenizer: 'auto' (the project's units.card if it loads, else a TEMPORARY codebook), 'tmp', or a codebook path."""
    render_seeds: int = 1
    """Piper renderings (seeds) per text in the corpus."""
    lookahead: int = 1
    """Units of lookahead of a newly trained decoder."""
    steps: int = 2500
    """Optimizer steps of latent distillation."""
    mel_steps: int = 300
    """Further steps with the audio-domain mel loss through the frozen decoder."""
    batch: int = 8
    """Windows per step (latent stage)."""
    window_units: int = 50
    """Units per training window (latent stage; 50 = 2 s)."""
    mel_batch: int = 4
    """Windows per step (mel stage)."""
    mel_window_units: int = 20
    """Units per training window (mel stage; 20 = 0.8 s)."""
    lr: float = 2e-3
    """Peak learning rate (AdamW, warmup then cosine)."""
    mel_weight: float = 1.0
    """Weight of the mel loss (the latent L1 is kept beside it)."""
    eval_items: int = 40
    """Held-out items judged by Whisper at the end."""
    emotion_classifier: str = "/work/data/default/emotion_classifier.pt"
    """The data issue's emotion classifier (judge of the plugins); if absent, the same classifier is trained on our targets."""
    emotion_train_items: int = 240
    """Neutral items resynthesised in every emotion for plugin training."""
    emotion_test_items: int = 40
    """Held-out (test-split) items resynthesised for evaluation."""
    emotion_scheme: str = "frontend+upsampler"
    """Default LoRA positions of the plugins ('+'-joined frontend, upsampler, decoder, or 'all')."""
    emotion_rank: int = 4
    """Default LoRA rank of the plugins."""
    emotion_steps: int = 120
    """Optimizer steps per plugin."""
    emotion_lr: float = 3e-3
    """Learning rate of plugin training."""
    emotion_batch: int = 3
    """Windows per plugin step."""
    emotion_window_units: int = 16
    """Units per plugin training window."""
    log_every: int = 50
    """Steps between loss log lines."""
    num_threads: int = 1
    """torch threads for training (1 is fastest on a loaded 2-core machine)."""
    seed: int = 0
    """Seed of initialisation and batching."""


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
    tts: TTSConfig = field(default_factory=lambda: TTSConfig())
    """The streaming unit decoder and its LoRA emotion plugins."""
    tts_train: TTSTrainConfig = field(default_factory=lambda: TTSTrainConfig())
    """Training of the unit decoder and its plugins."""
    data: DataConfig = field(default_factory=DataConfig)
    """Synthetic data (training/data): counts, voices, timelines, augmentation."""
