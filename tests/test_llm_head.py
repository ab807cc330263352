"""The fp16-screened greedy head (agent/llm_head.py) picks the float32 head's token."""

import dataclasses

import pytest
import torch
from torch import nn

from agent.llm import load_llm
from agent.llm_head import ScreenedHead, penalised


def _head(v: int = 3000, d: int = 64, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    head = nn.Linear(d, v, bias=False)
    with torch.no_grad():
        head.weight.normal_(0, 0.05)
    return head


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_screened_choice_is_the_float32_argmax(penalty):
    head = _head()
    screen = ScreenedHead(head)
    gen = torch.Generator().manual_seed(1)
    for i in range(200):
        h = torch.randn(64, generator=gen) * (1 + i % 40)  # small to large hidden norms
        seen = torch.randint(0, 3000, (i % 30,), generator=gen).tolist()
        with torch.no_grad():
            want = int(torch.argmax(penalised(head(h[None])[0], torch.tensor(sorted(set(seen)), dtype=torch.long),
                                              penalty)))
        assert screen.choose(h, seen, penalty) == want


def test_a_tie_that_fp16_cannot_see_is_decided_by_the_float32_rows():
    head = _head(v=500)
    h = torch.randn(64)
    with torch.no_grad():
        w = head.weight
        best = int(torch.argmax(w @ h))
        # Row 7 becomes row `best` plus a nudge far below fp16's resolution along h: in fp16 the
        # two rows are the same numbers, in float32 row 7 wins.
        w[7] = w[best] + 1e-6 * h / h.norm()
    fp16_logits = ScreenedHead(head).fp16(h[None])[0]
    assert fp16_logits[7] == fp16_logits[best]  # the screen alone cannot tell them apart
    with torch.no_grad():
        assert int(torch.argmax(head(h[None])[0])) == 7
    assert ScreenedHead(head).choose(h) == 7
    # With the repetition penalty on token 7 the other one wins, as over the full head.
    assert ScreenedHead(head).choose(h, seen=[7], penalty=1.5) == best


def test_a_flat_distribution_falls_back_to_the_full_head():
    head = _head(v=400)
    screen = ScreenedHead(head, max_exact=8)
    assert screen.choose(torch.zeros(64)) == 0  # every logit 0: the first id, as torch.argmax says


def test_runtime_llm_decodes_the_same_greedy_reply_from_hidden_states(tiny_cfg):
    llm = load_llm(dataclasses.replace(tiny_cfg.llm, dtype="float32", weights="fp16"))
    assert llm.screen is not None  # the runtime's weights: the screened head is on
    ids = torch.tensor([llm.chat_ids("How far away is the moon?")])
    with llm.streaming(1):
        out = llm.prefill_ids(ids)
        ref = [t for t, _ in llm.generate_stream(out.logits[0, -1], max_new_tokens=24, repetition_penalty=1.2)]
    with llm.streaming(1):
        out = llm.prefill_ids(ids, with_logits=False)
        reply = llm.greedy_hidden(out.hidden[0, -1], max_new_tokens=24, repetition_penalty=1.2)
        got = []
        while (token := reply.next_token) is not None:
            got.append(token)
            reply.feed(llm.prefill_ids(torch.tensor([[token]]), with_logits=False).hidden[0, -1])
    assert got == ref and len(ref) > 0
