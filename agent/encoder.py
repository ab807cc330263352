"""Chunked streaming speech encoder initialised from Whisper tiny.en (Freeze-Omni's input side).

Audio (16 kHz) -> streaming log-mel (100 Hz, ``agent.mel``) -> causal conv stem (50 Hz) ->
Transformer layers with block-causal attention -> (B, T, D) frames at 50 Hz.

Chunks ("blocks") are ``chunk_ms`` long (160 ms = 8 frames at 50 Hz). A frame attends to every
frame of its own block and of the ``left_chunks`` blocks before it, never to a later block. The
streaming pass keeps the keys/values of those past blocks in preallocated ring buffers, so one
``step`` of a block costs the same at minute 1 and minute 60, and its output equals the offline
pass under the same mask (tests/test_encoder_streaming.py).

What had to change from Whisper, knowingly:

- Normalisation: Whisper clamps the log-mel at the utterance-global max - 8; we use a causal
  running peak (see ``agent.mel``) and fine-tune (stage 1).
- Positions: Whisper adds learned-absolute (sinusoid-initialised) embeddings for 1500 frames
  (30 s); a session lasts minutes. We drop them and use rotary embeddings (RoPE) on part of each
  head's query/key dims, which make attention depend only on the *relative* offset of two
  frames. The streaming pass rotates with positions relative to the current window (bounded
  numbers for an unbounded stream); the offline pass with absolute positions; the dot products
  are the same. Only ``rotary_dims`` of the 64 head dims are rotated, so most of the pretrained
  content matching is left as Whisper learned it (GPT-NeoX-style partial rotary).
- Conv stem: Whisper's conv1 (k=3, pad=1) looks one mel frame (10 ms) ahead. We make it causal
  (pad 2 on the left): its output at t sees mel frames t-2..t, i.e. Whisper's output at t-1, a
  10 ms shift the fine-tuning absorbs; no lookahead is left anywhere. conv2 (k=3, stride 2,
  left pad 1) reads conv1 frames 2j-1..2j+1, all inside the current chunk or the cached
  previous frame, so it keeps Whisper's alignment unchanged. The stem caches 2 mel frames and
  1 conv1 frame between chunks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from agent.mel import HOP, SAMPLE_RATE, StreamingLogMel
from agent.streaming import StreamingModule, StreamingState
from configs.schema import EncoderConfig

MEL_PER_FRAME = 2
"""Mel frames (100 Hz) per encoder frame (50 Hz): the conv stem's stride."""
SAMPLES_PER_FRAME = HOP * MEL_PER_FRAME
"""320 samples = 20 ms per encoder frame."""


def block_causal_mask(num_frames: int, block: int, left_blocks: int) -> torch.Tensor:
    """(T, T) bool, True where query frame i may attend key frame j: same block or up to
    ``left_blocks`` blocks before it (``left_blocks < 0``: every earlier block)."""
    idx = torch.arange(num_frames) // block
    diff = idx[:, None] - idx[None, :]
    mask = diff >= 0
    if left_blocks >= 0:
        mask &= diff <= left_blocks
    return mask


class Rotary(nn.Module):
    """Rotary embedding of the first ``dims`` channels of each head (pairs (x_k, x_{k + dims/2}))."""

    def __init__(self, dims: int, base: float) -> None:
        super().__init__()
        if dims % 2:
            raise ValueError(f"rotary dims must be even, got {dims}")
        self.dims = dims
        # float64 angles: exact enough that streamed (window-relative) and offline (absolute)
        # positions give the same dot products to float32 precision over long utterances.
        inv_freq = 1.0 / (base ** (torch.arange(0, dims, 2, dtype=torch.float64) / max(dims, 1)))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def tables(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (..., T) -> cos, sin (..., T, dims / 2)."""
        ang = positions.to(torch.float64)[..., None] * self.inv_freq
        return ang.cos().to(dtype), ang.sin().to(dtype)

    def apply(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x (B, H, T, hd); cos/sin broadcastable to (B, H, T, dims / 2)."""
        if self.dims == 0:
            return x
        half = self.dims // 2
        x1, x2, rest = x[..., :half], x[..., half : self.dims], x[..., self.dims :]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)


@dataclass
class KVRingState(StreamingState):
    keys: torch.Tensor
    """(B, H, R, hd) un-rotated keys of the last R = left_chunks * chunk frames (ring buffer)."""
    values: torch.Tensor
    """(B, H, R, hd) values, same slots."""
    filled: torch.Tensor
    """(B,) how many of the most recent ring slots hold real frames for each row."""
    write: int = 0
    """Next ring slot to write (shared by all rows: every row advances by the same frames)."""

    def reset(self, mask: torch.Tensor) -> None:
        self.filled[mask] = 0
        self.keys[mask] = 0.0
        self.values[mask] = 0.0


class BlockCausalSelfAttention(StreamingModule[KVRingState]):
    """Whisper-style self-attention (q/v/out with bias, k without) with a block-causal window."""

    def __init__(self, dim: int, heads: int, block: int, left_blocks: int, rotary: Rotary) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"d_model {dim} not divisible by {heads} heads")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.block, self.left_blocks = block, left_blocks
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.rotary = rotary

    @property
    def ring_size(self) -> int:
        return self.left_blocks * self.block

    def _init_streaming_state(self, batch_size: int) -> KVRingState:
        shape = (batch_size, self.heads, self.ring_size, self.head_dim)
        w = getattr(self.q_proj, "weight", None)
        dtype = w.dtype if w is not None else torch.float32  # fp16-packed linears (llm_quant) output float32
        return KVRingState(
            batch_size=batch_size, keys=torch.zeros(shape, dtype=dtype), values=torch.zeros(shape, dtype=dtype),
            filled=torch.zeros(batch_size, dtype=torch.long),
        )

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = x.shape
        return self.out_proj(x.transpose(1, 2).reshape(b, t, self.dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Offline: x (B, T, D), mask (T, T) bool from ``block_causal_mask`` -> (B, T, D)."""
        t = x.shape[1]
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
        cos, sin = self.rotary.tables(torch.arange(t), q.dtype)
        q, k = self.rotary.apply(q, cos, sin), self.rotary.apply(k, cos, sin)
        return self._merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """Streaming: the next n frames (B, n, D), n a multiple of the block -> (B, n, D)."""
        st = self.streaming_state
        n, r, c = x.shape[1], self.ring_size, self.block
        if n % c:
            raise ValueError(f"streaming step must be whole chunks of {c} frames, got {n}")
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
        # Frame index relative to the first new frame: new frames 0..n-1, ring slot s holds the
        # frame of age a_s (1 = newest) at index -a_s. Attention is order-free, so the ring is
        # read in slot order; positions and the mask carry the time order.
        age = (st.write - torch.arange(r) - 1) % max(r, 1) + 1
        frame = torch.cat([-age, torch.arange(n)])
        key_block = torch.div(frame, c, rounding_mode="floor")
        query_block = torch.arange(n) // c
        diff = query_block[:, None] - key_block[None, :]
        allowed = (diff >= 0) & (diff <= self.left_blocks)  # (n, r + n)
        valid = torch.cat([age[None, :] <= st.filled[:, None], torch.ones(x.shape[0], n, dtype=torch.bool)], dim=1)
        mask = allowed[None, None] & valid[:, None, None, :]  # (B, 1, n, r + n)
        # Window-relative positions (>= 0 and bounded, however long the stream runs).
        key_pos = frame + r
        cos_k, sin_k = self.rotary.tables(key_pos, q.dtype)
        cos_q, sin_q = cos_k[r:], sin_k[r:]
        keys = torch.cat([st.keys, k], dim=2)
        values = torch.cat([st.values, v], dim=2)
        qr = self.rotary.apply(q, cos_q, sin_q)
        kr = self.rotary.apply(keys, cos_k, sin_k)
        out = self._merge(F.scaled_dot_product_attention(qr, kr, values, attn_mask=mask))
        if r:
            keep = min(n, r)
            slots = (st.write + torch.arange(n - keep, n)) % r
            st.keys[:, :, slots] = k[:, :, n - keep :]
            st.values[:, :, slots] = v[:, :, n - keep :]
            st.write = int((st.write + n) % r)
            st.filled.copy_(torch.clamp(st.filled + n, max=r))
        return out


class EncoderLayer(nn.Module):
    """Pre-LN Transformer layer with Whisper's parameter names (so Whisper weights load by name)."""

    def __init__(self, dim: int, heads: int, ffn: int, block: int, left_blocks: int, rotary: Rotary,
                 dropout: float) -> None:
        super().__init__()
        self.self_attn = BlockCausalSelfAttention(dim, heads, block, left_blocks, rotary)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn)
        self.fc2 = nn.Linear(ffn, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.fc2(F.gelu(self.fc1(self.final_layer_norm(x)))))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.self_attn(self.self_attn_layer_norm(x), mask))
        return self._ffn(x)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn.step(self.self_attn_layer_norm(x))
        return self._ffn(x)


@dataclass
class ConvStemState(StreamingState):
    mel_tail: torch.Tensor
    """(B, n_mels, 2) last two mel frames (conv1's causal left context)."""
    conv1_tail: torch.Tensor
    """(B, D, 1) last conv1 output frame (conv2's left context)."""

    def reset(self, mask: torch.Tensor) -> None:
        self.mel_tail[mask] = 0.0
        self.conv1_tail[mask] = 0.0


class CausalConvStem(StreamingModule[ConvStemState]):
    """Whisper's conv stem made causal: mel (B, M, 2T) at 100 Hz -> (B, T, D) at 50 Hz."""

    def __init__(self, n_mels: int, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, dim, kernel_size=3)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size=3, stride=2)

    def _init_streaming_state(self, batch_size: int) -> ConvStemState:
        dtype = self.conv1.weight.dtype
        return ConvStemState(
            batch_size=batch_size,
            mel_tail=torch.zeros(batch_size, self.conv1.in_channels, 2, dtype=dtype),
            conv1_tail=torch.zeros(batch_size, self.conv1.out_channels, 1, dtype=dtype),
        )

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.shape[-1] % MEL_PER_FRAME:
            raise ValueError(f"conv stem needs an even number of mel frames, got {mel.shape[-1]}")
        h = F.gelu(self.conv1(F.pad(mel, (2, 0))))
        return F.gelu(self.conv2(F.pad(h, (1, 0)))).transpose(1, 2)

    def step(self, mel: torch.Tensor) -> torch.Tensor:
        st = self.streaming_state
        if mel.shape[-1] % MEL_PER_FRAME:
            raise ValueError(f"conv stem needs an even number of mel frames, got {mel.shape[-1]}")
        x = torch.cat([st.mel_tail, mel], dim=-1)
        h = F.gelu(self.conv1(x))
        h = torch.cat([st.conv1_tail, h], dim=-1)
        out = F.gelu(self.conv2(h)).transpose(1, 2)
        st.mel_tail.copy_(x[..., -2:])
        st.conv1_tail.copy_(h[..., -1:])
        return out


@dataclass
class EncoderState(StreamingState):
    frames: torch.Tensor
    """(B,) encoder frames emitted per row since its last reset."""

    def reset(self, mask: torch.Tensor) -> None:
        self.frames[mask] = 0


class StreamingSpeechEncoder(StreamingModule[EncoderState]):
    """16 kHz audio -> (B, T, D) encoder frames at 50 Hz, offline or one chunk at a time.

    ``forward(audio (B, S))`` is the offline pass (S a multiple of the chunk; pad with silence);
    ``step(audio (B, S))`` the streaming pass inside ``with encoder.streaming(B):``.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.chunk_samples = int(round(cfg.chunk_ms * SAMPLE_RATE / 1000))
        if self.chunk_samples % SAMPLES_PER_FRAME:
            raise ValueError(f"encoder.chunk_ms must be a multiple of 20 ms, got {cfg.chunk_ms}")
        self.block = self.chunk_samples // SAMPLES_PER_FRAME
        if cfg.left_chunks < 0:
            raise ValueError("encoder.left_chunks must be >= 0 (the streaming cache is bounded)")
        self.mel = StreamingLogMel(cfg.n_mels, cfg.mel_peak_init, cfg.mel_peak_decay, cfg.mel_dynamic_range)
        self.stem = CausalConvStem(cfg.n_mels, cfg.d_model)
        rotary = Rotary(cfg.rotary_dims, cfg.rotary_base)
        self.layers = nn.ModuleList(
            EncoderLayer(cfg.d_model, cfg.heads, cfg.ffn_dim, self.block, cfg.left_chunks, rotary, cfg.dropout)
            for _ in range(cfg.layers)
        )
        self.layer_norm = nn.LayerNorm(cfg.d_model)

    @property
    def dim(self) -> int:
        return self.cfg.d_model

    def _init_streaming_state(self, batch_size: int) -> EncoderState:
        return EncoderState(batch_size=batch_size, frames=torch.zeros(batch_size, dtype=torch.long))

    def frames_for(self, num_samples: torch.Tensor | int) -> torch.Tensor | int:
        """Encoder frames produced by ``num_samples`` of audio (whole frames only)."""
        return num_samples // SAMPLES_PER_FRAME

    def forward_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """Offline pass from normalised log-mel (B, M, 2T) -> (B, T, D)."""
        x = self.stem(mel)
        mask = block_causal_mask(x.shape[1], self.block, self.cfg.left_chunks)
        for layer in self.layers:
            x = layer(x, mask)
        return self.layer_norm(x)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Offline pass: (B, S) with S a multiple of ``chunk_samples`` -> (B, S / 320, D)."""
        if audio.shape[-1] % self.chunk_samples:
            raise ValueError(f"offline encoder input must be whole chunks of {self.chunk_samples} samples "
                             f"(pad with silence), got {audio.shape[-1]}")
        return self.forward_mel(self.mel(audio))

    def step(self, audio: torch.Tensor) -> torch.Tensor:
        """Streaming pass over the next (B, S) samples, S a multiple of ``chunk_samples`` -> (B, S / 320, D)."""
        if audio.shape[-1] % self.chunk_samples or audio.shape[-1] == 0:
            raise ValueError(f"streaming encoder step needs whole chunks of {self.chunk_samples} samples, "
                             f"got {audio.shape[-1]}")
        x = self.stem.step(self.mel.step(audio))
        for layer in self.layers:
            x = layer.step(x)
        self.streaming_state.frames += x.shape[1]
        return self.layer_norm(x)


def pad_to_chunks(audio: torch.Tensor, chunk_samples: int) -> torch.Tensor:
    """Right-pad (B, S) with silence to a whole number of chunks."""
    s = audio.shape[-1]
    target = max(chunk_samples, math.ceil(s / chunk_samples) * chunk_samples)
    return F.pad(audio, (0, target - s))


def load_whisper_encoder_weights(encoder: StreamingSpeechEncoder, card: str) -> None:
    """Copy the Whisper encoder's weights (conv stem, layers, final norm) from a prepared card.

    Whisper's absolute position table is deliberately not used (see the module docstring).
    """
    from transformers import WhisperForConditionalGeneration
    from transformers.utils import logging as hf_logging

    from agent.assets import AssetError, prepared_dir

    hf_logging.set_verbosity_error()
    whisper = WhisperForConditionalGeneration.from_pretrained(prepared_dir(card))
    wcfg = whisper.config
    cfg = encoder.cfg
    got = (wcfg.d_model, wcfg.encoder_layers, wcfg.encoder_attention_heads, wcfg.encoder_ffn_dim, wcfg.num_mel_bins)
    want = (cfg.d_model, cfg.layers, cfg.heads, cfg.ffn_dim, cfg.n_mels)
    if got != want:
        raise AssetError(f"{card}: encoder dims (d_model, layers, heads, ffn, mels) {got} != config {want}")
    src = {k: v for k, v in whisper.model.encoder.state_dict().items() if not k.startswith("embed_positions")}
    mapped = {("stem." + k if k.startswith(("conv1", "conv2")) else k): v for k, v in src.items()}
    missing, unexpected = encoder.load_state_dict(mapped, strict=False)
    if unexpected or any(not k.startswith("mel.") for k in missing):
        raise AssetError(f"{card}: Whisper weights do not fit the encoder (missing {missing[:3]}, unexpected {unexpected[:3]})")


def build_encoder(cfg: EncoderConfig, init_pretrained: bool = True) -> StreamingSpeechEncoder:
    """Factory: a fresh encoder, initialised from ``cfg.init_card`` when set (and asked to)."""
    encoder = StreamingSpeechEncoder(cfg)
    if init_pretrained and cfg.init_card:
        load_whisper_encoder_weights(encoder, cfg.init_card)
    return encoder
