"""Streaming unit-to-waveform decoder (VITS-style): 25 Hz units -> 22.05 kHz speech.

Three blocks, named as the LoRA insertion positions of `agent.tts_emotion` (EELE's front end /
alignment / back end split):

- ``frontend`` (unit encoder, 25 Hz): unit embedding, one lookahead conv (CosyVoice 2: a conv of
  kernel P+1 right-padded by P units gives the causal blocks after it P units of future), then
  causal residual conv blocks. (B, n) ids -> (B, C, n).
- ``upsampler`` (duration + upsampling to the acoustic frame rate): a duration head (per-unit
  log time-scale, zero for the neutral voice: each unit lasts exactly 882 samples = 40 ms at
  22.05 kHz), a length regulator that maps units to 256-sample latent frames from exact sample
  counts (unit/frame ratio 882/256 = 3.445 is not an integer: frame j belongs to the unit whose
  span holds its centre sample 256 j + 128), then causal conv blocks at 86.13 frames/s and a
  projection to the 192 latent channels of the Piper decoder. (B, C, n) -> (B, 192, T).
- ``decoder``: the Piper HiFi-GAN (`agent.tts_vocoder`), frozen in neutral training: the front
  end and upsampler are distilled to produce the latents Piper fed it for the same audio.

Streaming: every part is causal except the lookahead conv and the decoder's own symmetric
padding, and every part streams exactly (agent/streaming_conv.py), so streamed audio equals
offline audio for any chunking (tests/test_tts_streaming.py). Algorithmic latency: ``lookahead``
units plus the decoder's 2582 samples (117 ms).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agent.streaming import StreamingModule, StreamingState
from agent.streaming_conv import NO_END, Conv1d, PadConv1d, length_mask, valid_mask
from agent.tts_vocoder import StreamingHiFiGAN
from agent.vits import VITSConfig

SAMPLE_RATE = 22050
HOP = 256
"""Output samples per latent frame (86.13 frames/s)."""
UNIT_SAMPLES = 882
"""Output samples per 25 Hz unit (40 ms at 22.05 kHz)."""
MAX_LOG_SCALE = 0.7
"""Bound on the duration head's per-unit log time-scale (x0.5 .. x2 duration)."""
PHASE_FEATURES = 4


@dataclass(kw_only=True)
class UnitTTSConfig:
    """Architecture of the unit decoder (stored in its weights file; changing it needs retraining)."""

    num_units: int = 500
    """Unit vocabulary; id ``num_units`` is the padding/unknown unit."""
    lookahead: int = 1
    """Units of future context (lookahead conv); latency is lookahead x 40 ms + the decoder's 117 ms."""
    unit_channels: int = 256
    """Width of the unit encoder."""
    unit_blocks: int = 6
    """Causal residual conv blocks at 25 Hz."""
    unit_kernel: int = 5
    """Kernel of the unit-level causal convs."""
    frame_channels: int = 192
    """Width of the frame-rate blocks."""
    frame_blocks: int = 3
    """Causal residual conv blocks at the latent frame rate."""
    frame_kernel: int = 5
    """Kernel of the frame-level causal convs."""
    latent_channels: int = 192
    """Channels of the Piper latents (decoder input)."""
    dropout: float = 0.0
    """Dropout inside the residual blocks while training (identity at inference)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of (B, C, T) (pointwise in time, so streaming-safe)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


@dataclass
class _Stateless(StreamingState):
    def reset(self, mask: torch.Tensor) -> None:
        pass


class CausalBlock(StreamingModule[_Stateless]):
    """``x + conv2(gelu(conv1(norm(x))))`` with a causal dilated conv1 and a 1x1 conv2."""

    def __init__(self, channels: int, kernel: int, dilation: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = ChannelNorm(channels)
        rf = dilation * (kernel - 1)
        self.conv1 = PadConv1d(Conv1d(channels, channels, kernel, dilation=dilation), rf, 0)
        self.conv2 = PadConv1d(Conv1d(channels, channels, 1), 0, 0)
        self.dropout = nn.Dropout(dropout)

    def _init_streaming_state(self, batch_size: int) -> _Stateless:
        return _Stateless(batch_size=batch_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.dropout(F.gelu(self.conv1(self.norm(x) * mask))), mask)

    def step(self, x: torch.Tensor, pos: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        m = valid_mask(pos, end, x.shape[-1], x.dtype)
        y, _ = self.conv1.step(self.norm(x) * m, pos, end)
        y, _ = self.conv2.step(F.gelu(y), pos, end)
        return x + y


class FrontEnd(StreamingModule[_Stateless]):
    """Unit ids (B, n) -> unit states (B, C, n); streaming output lags the input by ``lookahead``."""

    def __init__(self, cfg: UnitTTSConfig) -> None:
        super().__init__()
        c = cfg.unit_channels
        self.embed = nn.Embedding(cfg.num_units + 1, c)
        self.lookahead = PadConv1d(Conv1d(c, c, cfg.lookahead + 1), 0, cfg.lookahead)
        self.blocks = nn.ModuleList(CausalBlock(c, cfg.unit_kernel, 1 + (i % 2), cfg.dropout) for i in range(cfg.unit_blocks))
        self.norm = ChannelNorm(c)

    def _init_streaming_state(self, batch_size: int) -> _Stateless:
        return _Stateless(batch_size=batch_size)

    def forward(self, units: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(units).transpose(1, 2) * mask
        x = self.lookahead(x, mask)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x) * mask

    def step(self, units: torch.Tensor, pos: torch.Tensor, end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embed(units).transpose(1, 2) * valid_mask(pos, end, units.shape[-1])
        x, pos = self.lookahead.step(x, pos, end)
        for block in self.blocks:
            x = block.step(x, pos, end)
        return self.norm(x) * valid_mask(pos, end, x.shape[-1], x.dtype), pos


def unit_durations(log_scale: torch.Tensor) -> torch.Tensor:
    """(B, n) log time-scales -> (B, n) integer output samples per unit (882 at scale 0).

    Integers, so that the frame grid (cumulative sums) is the same offline and streamed.
    """
    return torch.round(UNIT_SAMPLES * torch.exp(log_scale.clamp(-MAX_LOG_SCALE, MAX_LOG_SCALE))).long()


def frames_before(samples: torch.Tensor) -> torch.Tensor:
    """Latent frames whose centre sample (256 j + 128) is <= ``samples``: round(samples / 256)."""
    return torch.div(samples + HOP // 2, HOP, rounding_mode="floor")


def phase_features(phase: torch.Tensor) -> torch.Tensor:
    """(..., T) position of a frame centre inside its unit, in (0, 1] -> (..., 4, T)."""
    return torch.stack([phase, phase * phase, torch.sin(math.pi * phase), torch.cos(math.pi * phase)], dim=-2)


def regulate(h: torch.Tensor, durations: torch.Tensor, lengths: torch.Tensor, offset: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Offline length regulation: unit states -> frame states with phase features.

    h (B, C, n), durations (B, n) samples, lengths (B,) units, offset (B,) samples before unit 0
    (to crop training windows out of longer utterances on the same frame grid).
    Returns frames (B, C + 4, T), frame_lengths (B,), first_frame (B,) (global index of frame 0).
    """
    b, c, n = h.shape
    offset = torch.zeros(b, dtype=torch.long) if offset is None else offset.long()
    d = durations.long() * (torch.arange(n)[None, :] < lengths[:, None])
    ends = offset[:, None] + torch.cumsum(d, dim=1)  # (B, n) sample at the end of each unit
    first = frames_before(offset)
    last = frames_before(ends[:, -1] if n else offset)
    frame_lengths = (last - first).clamp_min(0)
    t = int(frame_lengths.max()) if b else 0
    j = first[:, None] + torch.arange(t)[None, :]  # (B, T) global frame index
    centre = j * HOP + HOP // 2
    unit = torch.searchsorted(ends.contiguous(), centre.contiguous(), right=False).clamp_max(max(n - 1, 0))
    starts = ends - d
    phase = (centre - starts.gather(1, unit)).float() / d.gather(1, unit).clamp_min(1).float()
    frames = torch.cat([h.gather(2, unit[:, None, :].expand(b, c, t)), phase_features(phase)], dim=1)
    return frames * length_mask(frame_lengths, t, h.dtype), frame_lengths, first


@dataclass
class RegulatorState(StreamingState):
    samples: torch.Tensor
    """(B,) output samples covered by the units received so far."""
    backlog: torch.Tensor
    """(B, C + 4, cap) frames computed but not yet emitted (rows emit in lockstep)."""
    fill: torch.Tensor
    """(B,) frames in the backlog."""
    emitted: torch.Tensor
    """(B,) frames emitted so far (offline index of the next one)."""

    def reset(self, mask: torch.Tensor) -> None:
        self.samples[mask] = 0
        self.backlog[mask] = 0.0
        self.fill[mask] = 0
        self.emitted[mask] = 0


class LengthRegulator(StreamingModule[RegulatorState]):
    """Streaming `regulate`: units in, frames out as soon as their centre sample is covered.

    Rows with different durations (e.g. different emotions in one batch) complete different
    numbers of frames per step; all rows emit the smallest count and keep the rest in a
    preallocated backlog, so the decoder after it stays in lockstep (flush emits the rest).
    """

    def __init__(self, channels: int, capacity: int = 1024) -> None:
        super().__init__()
        self.channels, self.capacity = channels, capacity

    def _init_streaming_state(self, batch_size: int) -> RegulatorState:
        return RegulatorState(
            batch_size=batch_size,
            samples=torch.zeros(batch_size, dtype=torch.long),
            backlog=torch.zeros(batch_size, self.channels + PHASE_FEATURES, self.capacity),
            fill=torch.zeros(batch_size, dtype=torch.long),
            emitted=torch.zeros(batch_size, dtype=torch.long),
        )

    def step(self, h: torch.Tensor, durations: torch.Tensor, pos: torch.Tensor, end: torch.Tensor,
             final: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """h (B, C, n) unit states at unit positions ``pos``; durations (B, n).

        Returns frames (B, C + 4, m) and their offline start index per row.
        """
        st = self.streaming_state
        b, _, n = h.shape
        valid = valid_mask(pos, end, n, torch.float32)[:, 0] > 0
        for r in range(b):
            idx = torch.nonzero(valid[r]).flatten()
            if len(idx) == 0:
                continue
            frames, count, _ = regulate(h[r : r + 1, :, idx], durations[r : r + 1, idx],
                                        torch.tensor([len(idx)]), st.samples[r : r + 1])
            k = int(count[0])
            f = int(st.fill[r])
            if f + k > self.capacity:
                raise RuntimeError(f"length regulator backlog over {self.capacity} frames: rows of this batch "
                                   "drift too far apart in duration; stream them separately")
            st.backlog[r, :, f : f + k] = frames[0, :, :k]
            st.fill[r] += k
            st.samples[r] += durations[r, idx].sum()
        m = int(st.fill.max() if final else st.fill.min())
        out = st.backlog[:, :, :m].clone()
        start = st.emitted.clone()
        # Shift the backlog left by m frames (rows with fewer than m, only at flush, end empty).
        st.backlog = torch.cat([st.backlog[:, :, m:], torch.zeros_like(st.backlog[:, :, :m])], dim=2)
        st.fill = (st.fill - m).clamp_min(0)
        st.emitted += m
        return out, start


class Upsampler(StreamingModule[_Stateless]):
    """Duration head + length regulator + frame-rate causal blocks -> Piper latents (B, 192, T)."""

    def __init__(self, cfg: UnitTTSConfig) -> None:
        super().__init__()
        # Per-unit log time-scale. Zero (and not trained) for the neutral voice, whose units last
        # 40 ms each; emotion plugins put LoRA here to change the speaking rate.
        self.duration = PadConv1d(Conv1d(cfg.unit_channels, 1, 1), 0, 0)
        nn.init.zeros_(self.duration.conv.weight)
        nn.init.zeros_(self.duration.conv.bias)
        self.regulator = LengthRegulator(cfg.unit_channels)
        fc = cfg.frame_channels
        self.inp = PadConv1d(Conv1d(cfg.unit_channels + PHASE_FEATURES, fc, 1), 0, 0)
        self.blocks = nn.ModuleList(CausalBlock(fc, cfg.frame_kernel, 2**i, cfg.dropout) for i in range(cfg.frame_blocks))
        self.norm = ChannelNorm(fc)
        self.proj = PadConv1d(Conv1d(fc, cfg.latent_channels, 1), 0, 0)

    def _init_streaming_state(self, batch_size: int) -> _Stateless:
        return _Stateless(batch_size=batch_size)

    def log_scale(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, n) unit states -> (B, n) per-unit log time-scale."""
        return self.duration(h, mask)[:, 0]

    def frames_to_latents(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.inp(x, mask)
        for block in self.blocks:
            x = block(x, mask)
        return self.proj(self.norm(x) * mask, mask)

    def frames_step(self, x: torch.Tensor, pos: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        m = valid_mask(pos, end, x.shape[-1], x.dtype)
        x, _ = self.inp.step(x, pos, end)
        for block in self.blocks:
            x = block.step(x, pos, end)
        y, _ = self.proj.step(self.norm(x) * m, pos, end)
        return y


@dataclass
class TTSOutput:
    audio: torch.Tensor | None
    """(B, T * 256) waveform (zeros past each row's length), None when not vocoded."""
    latents: torch.Tensor
    """(B, 192, T) predicted decoder input."""
    frame_lengths: torch.Tensor
    """(B,) valid frames per row."""
    first_frame: torch.Tensor
    """(B,) global index of frame 0 (non-zero for windows cropped with an offset)."""
    log_scale: torch.Tensor
    """(B, n) per-unit log time-scale the duration head predicted."""

    @property
    def lengths(self) -> torch.Tensor:
        """(B,) valid audio samples per row."""
        return self.frame_lengths * HOP


@dataclass
class AudioChunk:
    audio: torch.Tensor
    """(B, m) decoder output of this step."""
    valid: torch.Tensor
    """(B, m) True where ``audio`` is real output (False in a row's start-up delay or past its end)."""

    def row(self, i: int) -> torch.Tensor:
        return self.audio[i][self.valid[i]]


@dataclass
class TTSState(StreamingState):
    unit_pos: torch.Tensor
    """(B,) units received (offline index of the next one)."""
    ended: torch.Tensor
    """(B,) unit count once the row is flushed, else NO_END."""
    frames_total: torch.Tensor
    """(B,) latent frames of the row once flushed, else NO_END."""

    def reset(self, mask: torch.Tensor) -> None:
        self.unit_pos[mask] = 0
        self.ended[mask] = NO_END
        self.frames_total[mask] = NO_END


class UnitTTS(StreamingModule[TTSState]):
    """Units (B, n) at 25 Hz -> 22.05 kHz waveform. Offline ``forward`` or streaming ``step``.

    Inside ``with tts.streaming(B):`` calling the module (``tts(units)``) streams: that is how
    peft's per-row ``adapter_names`` reach the LoRA layers in both modes.
    """

    def __init__(self, cfg: UnitTTSConfig, vocoder: StreamingHiFiGAN | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.frontend = FrontEnd(cfg)
        self.upsampler = Upsampler(cfg)
        self.decoder = vocoder if vocoder is not None else StreamingHiFiGAN(VITSConfig())

    # ------------------------------------------------------------------ offline
    def forward(self, units: torch.Tensor, lengths: torch.Tensor | None = None, *,
                durations: torch.Tensor | None = None, offset: torch.Tensor | None = None,
                vocode: bool = True, final: bool = False) -> TTSOutput | AudioChunk:
        if self.is_streaming:
            return self.step(units, final=final)
        return self.offline(units, lengths, durations=durations, offset=offset, vocode=vocode)

    def offline(self, units: torch.Tensor, lengths: torch.Tensor | None = None, *,
                durations: torch.Tensor | None = None, offset: torch.Tensor | None = None,
                vocode: bool = True) -> TTSOutput:
        """units (B, n); lengths (B,) units (default: all); durations (B, n) samples per unit to
        force (teacher forcing; default: the duration head's); offset (B,) samples before unit 0."""
        b, n = units.shape
        lengths = torch.full((b,), n, dtype=torch.long) if lengths is None else lengths
        mask = length_mask(lengths, n)
        h = self.frontend(units.clamp(0, self.cfg.num_units), mask)
        log_scale = self.upsampler.log_scale(h, mask)
        d = unit_durations(log_scale) if durations is None else durations
        frames, frame_lengths, first = regulate(h, d, lengths, offset)
        fmask = length_mask(frame_lengths, frames.shape[-1])
        latents = self.upsampler.frames_to_latents(frames, fmask)
        audio = self.decoder(latents, frame_lengths) if vocode else None
        return TTSOutput(audio=audio, latents=latents, frame_lengths=frame_lengths, first_frame=first, log_scale=log_scale)

    # ------------------------------------------------------------------ streaming
    def _init_streaming_state(self, batch_size: int) -> TTSState:
        return TTSState(
            batch_size=batch_size,
            unit_pos=torch.zeros(batch_size, dtype=torch.long),
            ended=torch.full((batch_size,), NO_END, dtype=torch.long),
            frames_total=torch.full((batch_size,), NO_END, dtype=torch.long),
        )

    def step(self, units: torch.Tensor | None, final: bool = False) -> AudioChunk:
        """Next (B, n) units of each row (n may be 0) -> the audio they complete.

        ``final=True`` ends every row after these units and returns the rest of its audio.
        """
        st = self.streaming_state
        b = st.batch_size
        if units is None:
            units = torch.zeros(b, 0, dtype=torch.long)
        n = units.shape[1]
        pos = st.unit_pos.clone()
        st.unit_pos += n
        if final:
            st.ended = st.unit_pos.clone()
            # Run the lookahead conv past the end (its inputs there are masked to zero).
            units = torch.cat([units, torch.zeros(b, self.cfg.lookahead, dtype=torch.long)], dim=1)
        h, hpos = self.frontend.step(units.clamp(0, self.cfg.num_units), pos, st.ended)
        log_scale = self.upsampler.log_scale(h)
        frames, fpos = self.upsampler.regulator.step(h, unit_durations(log_scale), hpos, st.ended, final=final)
        if final:
            # Every unit is in: each row's frame count is now known (shorter rows were padded).
            st.frames_total = frames_before(self.upsampler.regulator.streaming_state.samples)
        latents = self.upsampler.frames_step(frames, fpos, st.frames_total)
        if final:
            latents = torch.cat([latents, torch.zeros(b, latents.shape[1], self.decoder.delay_frames)], dim=2)
        audio, apos = self.decoder.step(latents, st.frames_total if final else None)
        end_samples = torch.where(st.frames_total >= NO_END, st.frames_total, st.frames_total * HOP)
        valid = valid_mask(apos, end_samples, audio.shape[-1])[:, 0] > 0
        return AudioChunk(audio=audio, valid=valid)

    @torch.no_grad()
    def stream(self, units: torch.Tensor, chunk: int = 4) -> list[np.ndarray]:
        """Convenience: stream one row of units (n,) in chunks; returns the audio pieces."""
        pieces = []
        with self.streaming(1):
            for i in range(0, len(units), chunk):
                out = self(units[None, i : i + chunk], final=i + chunk >= len(units))
                pieces.append(out.row(0).numpy())
            if len(units) == 0:
                pieces.append(self(None, final=True).row(0).numpy())
        return pieces

    @property
    def latency_ms(self) -> float:
        """Algorithmic latency: lookahead units plus the decoder's delay."""
        return 1000.0 * (self.cfg.lookahead * UNIT_SAMPLES + self.decoder.delay_samples) / SAMPLE_RATE


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------
@dataclass
class TTSWeightsMeta:
    config: UnitTTSConfig
    units: str = ""
    """Identity of the unit codebook the decoder was trained on (ids mean nothing without it)."""
    extra: dict = field(default_factory=dict)


def trainable_state_dict(model: UnitTTS) -> dict[str, torch.Tensor]:
    """The trained part (front end + upsampler); the decoder comes from the Piper voice."""
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.startswith("decoder.")}


def save_tts(model: UnitTTS, path: str | Path, units: str, extra: dict | None = None, half: bool = False) -> Path:
    """Atomic safetensors save of the trained part (fp16 storage with ``half``)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = trainable_state_dict(model)
    if half:
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    meta = {"config": model.cfg.to_json(), "units": units, "extra": json.dumps(extra or {}, sort_keys=True)}
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(sd, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def read_tts_meta(path: str | Path) -> TTSWeightsMeta:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "config" not in meta:
        raise ValueError(f"{path}: not a unit-decoder weights file (no 'config' metadata)")
    return TTSWeightsMeta(config=UnitTTSConfig(**json.loads(meta["config"])), units=meta.get("units", ""),
                          extra=json.loads(meta.get("extra", "{}")))


def build_tts(cfg: UnitTTSConfig, piper_decoder: nn.Module) -> UnitTTS:
    """A fresh model with the decoder copied from the Piper voice's generator."""
    return UnitTTS(cfg, StreamingHiFiGAN.from_piper(piper_decoder))


def load_tts_weights(model: UnitTTS, path: str | Path) -> UnitTTS:
    from safetensors.torch import load_file

    sd = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith("decoder.")]
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model
