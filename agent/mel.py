"""Streaming log-mel front end with Whisper's filterbank and a causal, streaming-safe normalisation.

Whisper computes an 80-bin log10 mel spectrogram of 16 kHz audio (25 ms Hann window, 10 ms hop)
with a *centred* STFT, clamps it at the utterance-global maximum minus 8 (80 dB) and rescales by
``(x + 4) / 4``. Two of those steps cannot stream:

- the centred STFT frame t covers samples [160 t - 200, 160 t + 200): 12.5 ms of lookahead. We
  use a causal framing instead: frame t covers [160 t - 240, 160 t + 160), i.e. it *ends* at
  the end of its hop. A chunk of N hops then yields exactly N frames with no lookahead; the
  240 samples of left context are cached between chunks (zeros before the first one, and the
  offline pass left-pads the same zeros), so chunk boundaries are exact.
- the clamp at the global maximum needs the whole utterance. We replace the global maximum by
  a running peak with a constant decay, ``peak_t = max(peak_{t-1} - decay, frame_max_t)``,
  starting from ``peak_init`` (a typical speech level). It is causal, a single float per row
  of state, bounded for unbounded streams, and it reduces to Whisper's rule on a steady
  utterance (the peak then sits at the loudest frame). Since it is a max-plus recurrence it can
  also be computed in one vectorised pass offline (cumulative max of ``x_s + decay * s``), so
  training runs on whole utterances and the streamed features still match the offline ones.
  The encoder is fine-tuned on these features (stage 1), which absorbs the small shift from
  Whisper's exact normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from agent.streaming import StreamingModule, StreamingState

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80


def whisper_mel_filters(n_mels: int = N_MELS) -> torch.Tensor:
    """Whisper's Slaney-normalised mel filterbank, (n_fft // 2 + 1, n_mels) float32."""
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
        max_frequency=SAMPLE_RATE / 2, sampling_rate=SAMPLE_RATE, norm="slaney", mel_scale="slaney",
    )
    return torch.from_numpy(np.asarray(fb, dtype=np.float32))


@dataclass
class LogMelState(StreamingState):
    tail: torch.Tensor
    """(B, N_FFT - HOP) last samples of the previous chunk (left context of the next frames)."""
    peak: torch.Tensor
    """(B,) running log10 peak of the normalisation."""
    peak_init: float

    def reset(self, mask: torch.Tensor) -> None:
        self.tail[mask] = 0.0
        self.peak[mask] = self.peak_init


class StreamingLogMel(StreamingModule[LogMelState]):
    """16 kHz audio (B, S) -> normalised log-mel (B, n_mels, S // 160), causal and streamable.

    ``forward`` is the offline pass over whole (zero-left-padded) signals; ``step`` consumes the
    next ``S`` samples of a stream (S a multiple of 160) and returns the same frames the offline
    pass gives for them.
    """

    def __init__(self, n_mels: int = N_MELS, peak_init: float = 1.0, peak_decay: float = 0.002,
                 dynamic_range: float = 8.0) -> None:
        super().__init__()
        self.n_mels = n_mels
        self.peak_init = float(peak_init)
        self.peak_decay = float(peak_decay)
        self.dynamic_range = float(dynamic_range)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.register_buffer("filters", whisper_mel_filters(n_mels), persistent=False)

    def _init_streaming_state(self, batch_size: int) -> LogMelState:
        return LogMelState(
            batch_size=batch_size,
            tail=torch.zeros(batch_size, N_FFT - HOP),
            peak=torch.full((batch_size,), self.peak_init),
            peak_init=self.peak_init,
        )

    def _log_power(self, padded: torch.Tensor) -> torch.Tensor:
        """(B, 240 + 160 T) samples -> (B, T, n_mels) log10 mel power (unnormalised)."""
        frames = padded.unfold(-1, N_FFT, HOP)  # (B, T, N_FFT), frame t ends at sample 240 + 160 (t + 1)
        spec = torch.fft.rfft(frames * self.window, dim=-1)
        power = spec.real.square() + spec.imag.square()
        mel = power @ self.filters
        return torch.clamp(mel, min=1e-10).log10()

    def _normalise(self, logmel: torch.Tensor, peak0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Running-peak clamp of (B, T, M) given the peak before the first frame (B,)."""
        t = logmel.shape[1]
        d = self.peak_decay
        steps = torch.arange(t, dtype=logmel.dtype)
        frame_max = logmel.amax(dim=-1)  # (B, T)
        # peak_t = max(peak0 - d (t + 1), max_{s<=t} frame_max_s - d (t - s)): a max-plus scan.
        scan = torch.cummax(frame_max + d * steps, dim=1).values - d * steps
        peak = torch.maximum(peak0[:, None] - d * (steps + 1), scan)
        floor = (peak - self.dynamic_range)[:, :, None]
        out = (torch.maximum(logmel, floor) + 4.0) / 4.0
        return out, peak[:, -1]

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Offline pass: (B, S) -> (B, n_mels, S // 160). Trailing samples short of a hop are dropped."""
        b, s = audio.shape
        t = s // HOP
        padded = torch.cat([audio.new_zeros(b, N_FFT - HOP), audio[:, : t * HOP]], dim=1)
        logmel = self._log_power(padded)
        out, _ = self._normalise(logmel, audio.new_full((b,), self.peak_init))
        return out.transpose(1, 2)

    def step(self, audio: torch.Tensor) -> torch.Tensor:
        """Streaming pass over the next (B, S) samples, S a multiple of 160 -> (B, n_mels, S // 160)."""
        st = self.streaming_state
        b, s = audio.shape
        if s % HOP:
            raise ValueError(f"streaming log-mel needs a multiple of {HOP} samples per step, got {s}")
        padded = torch.cat([st.tail, audio], dim=1)
        logmel = self._log_power(padded)
        out, peak = self._normalise(logmel, st.peak)
        st.tail.copy_(padded[:, -(N_FFT - HOP):])
        st.peak.copy_(peak)
        return out.transpose(1, 2)
