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
class VadConfig:
    backend: str = "webrtc"
    """Voice activity detector: webrtc (webrtcvad-wheels) or silero (ONNX from faster-whisper's assets)."""
    aggressiveness: int = 3
    """webrtc only: 0 (permissive) .. 3 (strict); 0-2 call -50 dBFS white noise speech."""
    frame_ms: int = 20
    """webrtc only: frame length, 10, 20 or 30 ms (silero always uses 32 ms blocks)."""
    threshold: float = 0.5
    """Speech probability at or above which a block counts as speech."""
    start_ms: float = 60.0
    """Speech needed before a segment opens (its start is backdated to the first speech block)."""
    end_ms: float = 300.0
    """Hangover: silence needed before a segment closes (its end is backdated to the speech)."""


@dataclass(kw_only=True)
class TransportConfig:
    host: str = "127.0.0.1"
    """Address the WebRTC server binds; 127.0.0.1 keeps it local, 0.0.0.0 exposes it."""
    port: int = 8080
    """TCP port of the signalling server and page."""
    max_sessions: int = 4
    """Concurrent calls; the next offer gets 503."""
    max_sdp_bytes: int = 65536
    """Largest accepted POST /offer body (a browser offer is 3-8 KB)."""
    idle_timeout_s: float = 10.0
    """A call with no incoming media for this long is closed (a killed browser sends nothing)."""
    ice_servers: list[str] = field(default_factory=list)
    """STUN/TURN servers, "stun:host:port" or "turn:host:port,user,credential"; empty = host candidates only."""
    allowed_origins: list[str] = field(default_factory=list)
    """Origins allowed to POST /offer from a browser; empty = the server's own origin only."""
    jitter_buffer: str = "bounded"
    """Receive jitter buffer: bounded (ours, see speech_io/webrtc/jitter.py) or aiortc (its default)."""
    jitter_prefetch: int = 0
    """bounded: frames of look-ahead held before release (0 = release in-order packets at once; aiortc holds 4 = 80 ms)."""
    jitter_slack: int = 2
    """bounded: extra frames it waits for a late/missing packet before dropping to catch up."""
    tls_cert: str = ""
    """PEM certificate to serve HTTPS (browsers allow the mic only on https or localhost)."""
    tls_key: str = ""
    """PEM private key for tls_cert (empty if the certificate file holds it)."""
    device_rate: int = 48000
    """Sample rate for local sounddevice mic/speaker streams."""


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
    dialogue_seconds: float = 50.0
    """Target length of one dialogue (turns are added until it is reached)."""
    emotion_texts: int = 300
    """Texts rendered in all five emotions by the agent voice."""
    emotion_other_voices: int = 24
    """Other voices (user voices) that also get emotional renderings (emotion-classifier data)."""
    emotion_texts_per_other_voice: int = 15
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
    vad: VadConfig = field(default_factory=VadConfig)
    """Voice activity detection on the user's audio (all transports)."""
    transport: TransportConfig = field(default_factory=TransportConfig)
    """WebRTC server limits, ICE, jitter buffer; local audio device settings."""
    data: DataConfig = field(default_factory=DataConfig)
    """Synthetic data (training/data): counts, voices, timelines, augmentation."""
