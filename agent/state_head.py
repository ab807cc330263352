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
    """Hidden states of consecutive chunks -> per-chunk logits over CONTINUE / INTERRUPT / REJECT.

    With ``context`` > 1 the decision on a chunk reads the hidden states of that chunk and of the
    ``context - 1`` chunks before it in the same listening context (concatenated, newest first;
    zeros before the context's first chunk). The idea: a mid-turn pause and an end of turn look
    alike a few chunks into the silence, and the chunks that held the last words are where they
    differ. Measured so far, an 8-chunk head trained by stage 3 kept no more pauses than a 1-chunk
    one (agent/weights/speech-input-default.md, last section), so the default is 1.
    """

    def __init__(self, llm_dim: int, hidden: int = 256, context: int = 1) -> None:
        super().__init__()
        if context < 1:
            raise ValueError(f"state head context must be >= 1 chunk, got {context}")
        self.context = context
        self.norm = nn.LayerNorm(llm_dim)
        n_in = context * llm_dim
        if hidden > 0:
            self.net: nn.Module = nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, 3))
        else:
            self.net = nn.Linear(n_in, 3)

    def forward(self, hidden: torch.Tensor, past: torch.Tensor | None = None,
                past_len: torch.Tensor | None = None) -> torch.Tensor:
        """``hidden`` (..., C, D): C consecutive chunks, the first one ``past_len`` chunks into its
        context (0 when ``past`` is None). ``past`` (..., context - 1, D): the hidden states of the
        chunks just before, oldest first; only the last ``past_len`` (...,) rows are used.
        Returns (..., C, 3). With ``context`` 1, any (..., D) batch of single chunks works too.
        """
        x = self.norm(hidden.float())
        if self.context == 1:
            return self.net(x)
        k, c = self.context, x.shape[-2]
        if past is None:
            prev = x.new_zeros(*x.shape[:-2], k - 1, x.shape[-1])
        else:
            prev = self.norm(past.float())
            age = torch.arange(k - 1, 0, -1, device=x.device)  # chunks back from the first new one
            valid = age <= past_len.to(x.device)[..., None]
            prev = prev * valid[..., None].to(prev.dtype)
        seq = torch.cat([prev, x], dim=-2)  # (..., k - 1 + C, D); chunk t at k - 1 + t
        window = torch.cat([seq[..., k - 1 - j : k - 1 - j + c, :] for j in range(k)], dim=-1)
        return self.net(window)
