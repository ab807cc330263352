"""Speech adapter: encoder frames (50 Hz) -> the frozen LLM's input-embedding space (12.5 Hz).

Frame stacking (``stack`` consecutive frames concatenated) then a two-layer MLP. With the
default stack of 4, a 160 ms chunk (8 encoder frames) becomes 2 LLM positions. Stacking is
aligned to the start of the stream, so a group never straddles more than what has arrived: the
streaming pass keeps the < ``stack`` frames that do not yet fill a group in a small preallocated
buffer and emits them with the next step. (With 160 ms chunks and stack 4 the buffer is always
empty between chunks; other chunk sizes, e.g. 40 ms, need it.)

The output is scaled to the LLM's embedding norm (``embed_scale`` is set from the LLM's
embedding table at build time) so that the frozen LLM sees inputs of the size it was trained on
from the first step; the last layer starts small and learns the direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from agent.streaming import StreamingModule, StreamingState
from configs.schema import AdapterConfig


@dataclass
class AdapterState(StreamingState):
    pending: torch.Tensor
    """(B, stack - 1, D_in) encoder frames waiting for a full group."""
    count: int = 0
    """How many of ``pending`` are filled (same for every row: rows advance together)."""

    def reset(self, mask: torch.Tensor) -> None:
        # A reset row restarts its stream at a group boundary; rows advance in lockstep, so the
        # partial group of a reset row is dropped by zeroing (only happens mid-group when the
        # caller resets between non-aligned steps, which the runtime never does).
        self.pending[mask] = 0.0


class SpeechAdapter(StreamingModule[AdapterState]):
    """(B, T, D_enc) at 50 Hz -> (B, T / stack, D_llm) LLM input embeddings."""

    def __init__(self, cfg: AdapterConfig, enc_dim: int, llm_dim: int, embed_rms: float = 1.0) -> None:
        super().__init__()
        self.cfg = cfg
        self.stack = cfg.stack
        self.enc_dim = enc_dim
        self.norm = nn.LayerNorm(enc_dim * cfg.stack)
        self.fc1 = nn.Linear(enc_dim * cfg.stack, cfg.hidden)
        self.fc2 = nn.Linear(cfg.hidden, llm_dim)
        self.register_buffer("embed_scale", torch.tensor(float(embed_rms)))
        nn.init.normal_(self.fc2.weight, std=0.02)
        nn.init.zeros_(self.fc2.bias)
        # Token-CTC head (stage 2's auxiliary loss): cosine of the output with the LLM's own
        # (frozen) embedding table, plus a learned blank direction, times a learned scale.
        self.ctc_blank = nn.Parameter(torch.randn(llm_dim) * embed_rms)
        self.ctc_log_scale = nn.Parameter(torch.tensor(2.3))

    def _init_streaming_state(self, batch_size: int) -> AdapterState:
        dtype = self.fc1.weight.dtype
        return AdapterState(batch_size=batch_size, pending=torch.zeros(batch_size, self.stack - 1, self.enc_dim, dtype=dtype))

    def _project(self, groups: torch.Tensor) -> torch.Tensor:
        """(B, N, stack * D_enc) -> (B, N, D_llm)."""
        h = self.fc2(F.gelu(self.fc1(self.norm(groups))))
        # RMS-normalise then scale to the LLM's typical embedding RMS: the LLM never sees
        # inputs far off its training distribution, whatever the encoder's scale.
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        return h * self.embed_scale

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Offline: (B, T, D_enc) -> (B, T // stack, D_llm); trailing frames short of a group are dropped."""
        b, t, d = frames.shape
        n = t // self.stack
        return self._project(frames[:, : n * self.stack].reshape(b, n, self.stack * d))

    def step(self, frames: torch.Tensor) -> torch.Tensor:
        """Streaming: the next (B, n, D_enc) frames -> (B, m, D_llm), m = groups completed by them."""
        st = self.streaming_state
        x = torch.cat([st.pending[:, : st.count], frames], dim=1)
        b, t, d = x.shape
        n = t // self.stack
        rest = t - n * self.stack
        st.pending[:, :rest] = x[:, n * self.stack :]
        st.count = rest
        return self._project(x[:, : n * self.stack].reshape(b, n, self.stack * d))


def token_ctc_logits(adapter: SpeechAdapter, emb: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(B, N, D) adapter outputs x (V, D) LLM embedding table -> (B, N, V + 1) CTC logits, blank = 0.

    Trained with CTC on the transcript's LLM token ids, this pulls each speech embedding towards
    the embedding of the token spoken there, so the frozen LLM can read speech like text from the
    first steps of stage 2 (its own transcript loss alone aligns far more slowly).
    """
    cands = torch.cat([adapter.ctc_blank[None].to(table.dtype), table], dim=0)
    cands = F.normalize(cands.float(), dim=-1)
    return adapter.ctc_log_scale.exp() * (F.normalize(emb.float(), dim=-1) @ cands.T)


def embedding_rms(llm_embedding: torch.Tensor) -> float:
    """Typical per-token RMS of an embedding table (V, D) (median over tokens)."""
    return float(llm_embedding.float().pow(2).mean(-1).sqrt().median())
