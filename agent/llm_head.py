"""The greedy next token from a last-layer hidden state, at the cost of an fp16 output head, with
the float32 head's choice.

Why: the runtime decodes replies greedily, and SmolLM2's tied output head is 49,152 x 576 float32
weights (113 MB): one row of logits reads all of it, ~11 ms on one core here, as long as half the
decoder's pass for that token. An fp16 copy in fbgemm's packed layout reads half the bytes (~2.3
ms) but rounds the weights, so on a near tie it could pick another token than the float32 head
(the runtime's head stayed float32 for exactly that reason).

``ScreenedHead`` keeps both: the fp16 logits screen the vocabulary, and only the tokens that can
still win are scored with the float32 rows. The screen is safe by a bound, not by luck: for
hidden state ``h`` and row ``i``, |fp16 logit - float32 logit| <= ||h|| * ||W_i - fp16(W_i)|| plus
float32 summation error (<= D * 2^-24 * ||h|| * ||W_i|| for D products, Cauchy-Schwarz; we allow
4x that). The repetition penalty is monotone in the logit, so it maps the interval of each
logit to an interval of its penalised value; a token whose upper end is below the best lower end
cannot win. Usually one to a few tokens remain; if more than ``max_exact`` do (a flat
distribution), the full float32 head decides. The chosen token is the float32 head's, except
where two float32 logits tie within float32 rounding (the sums are ordered differently).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from agent.llm_quant import Fp16Linear

_F32_EPS = 2.0**-24


def token_ids(seen: Sequence[int]) -> torch.Tensor:
    """The distinct token ids of ``seen``, ascending (where the repetition penalty applies)."""
    return torch.tensor(sorted(set(seen)), dtype=torch.long)


def penalised(logits: torch.Tensor, idx: torch.Tensor, penalty: float) -> torch.Tensor:
    """``logits`` (V,) with the repetition penalty applied at token ids ``idx`` (a copy): positive
    logits divided by ``penalty``, negative ones multiplied (the transformers convention)."""
    out = logits.clone()
    if penalty != 1.0 and len(idx):
        vals = out[idx]
        out[idx] = torch.where(vals > 0, vals / penalty, vals * penalty)
    return out


class ScreenedHead:
    """Greedy choice over a float32 linear output head (no bias) via an fp16 screen (module doc)."""

    def __init__(self, head: nn.Linear, max_exact: int = 64) -> None:
        if head.bias is not None:
            raise ValueError("ScreenedHead: output heads with a bias are not supported")
        w = head.weight.detach()
        if w.dtype != torch.float32:
            raise ValueError(f"ScreenedHead screens a float32 head, got {w.dtype}")
        self.weight = w  # the head's own tensor (tied to the embeddings): no copy
        self.fp16 = Fp16Linear(w, None)
        self.max_exact = max_exact
        rounding = (w - w.half().float()).norm(dim=1)
        # Per-row error of the screen per unit of ||h||: the fp16 rounding of the row, plus
        # float32 summation in both products (4x the worst-case bound, for margin).
        self.row_bound = rounding + 4 * w.shape[1] * _F32_EPS * w.norm(dim=1)

    def choose(self, hidden: torch.Tensor, seen: Sequence[int] = (), penalty: float = 1.0) -> int:
        """The argmax of the float32 head's logits for ``hidden`` (D,), with the repetition penalty
        on the ``seen`` token ids."""
        h = hidden.detach().float().reshape(1, -1)
        approx = self.fp16(h)[0]
        slack = self.row_bound * float(h.norm())
        idx = token_ids(seen)
        lo = penalised(approx - slack, idx, penalty)
        hi = penalised(approx + slack, idx, penalty)
        cand = torch.nonzero(hi >= lo.max()).reshape(-1)
        if len(cand) > self.max_exact:
            return int(torch.argmax(penalised(nn.functional.linear(h, self.weight)[0], idx, penalty)))
        exact = penalised(self.weight[cand] @ h[0], torch.nonzero(torch.isin(cand, idx)).reshape(-1), penalty)
        # ``cand`` is ascending, and argmax returns the first maximum: the lowest id, as over the full head.
        return int(cand[int(torch.argmax(exact))])
