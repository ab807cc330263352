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
