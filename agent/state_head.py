"""Turn-taking state head (Freeze-Omni): LLM hidden state at a chunk's last position -> 3 logits.

Labels, per 160 ms user chunk (decided with audio up to the chunk's end):

- 0 CONTINUE: keep listening (user mid-turn, mid-turn pause, silence with nobody speaking, or a
  real barge-in while the agent speaks: the runtime stops the agent on it and keeps listening);
- 1 INTERRUPT: the user's turn is over, take it now (stop listening, generate the reply);
- 2 REJECT: do not take the turn (backchannel, noise, background or side talk, or silence while
  the agent is speaking).

The head reads the frozen LLM's last-layer hidden state, so it sees everything the LLM has
prefilled: the system prompt, the prompt embeddings and every speech chunk so far. Whether the
agent is currently speaking matters for the labels (silence is CONTINUE when the agent is quiet
and REJECT while it speaks); that bit enters through the input side (``SpeechInput`` adds a
learned "agent speaking" vector to the chunk's speech embeddings), so the head's interface stays
"hidden state in, 3 logits out".
"""

from __future__ import annotations

import torch
from torch import nn

CONTINUE, INTERRUPT, REJECT = 0, 1, 2
STATE_NAMES = ("continue", "interrupt", "reject")


class StateHead(nn.Module):
    """(..., D_llm) hidden states -> (..., 3) logits over CONTINUE / INTERRUPT / REJECT."""

    def __init__(self, llm_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(llm_dim)
        if hidden > 0:
            self.net: nn.Module = nn.Sequential(nn.Linear(llm_dim, hidden), nn.GELU(), nn.Linear(hidden, 3))
        else:
            self.net = nn.Linear(llm_dim, 3)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(hidden.float()))
