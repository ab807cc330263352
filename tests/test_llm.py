"""The frozen LLM wrapper on the real bundled SmolLM2 (and a tiny random Llama)."""

import pytest
import torch

from agent.llm import ContextFullError


def test_answers_capital_of_france(llm):
    answer = "".join(llm.answer("What is the capital of France?"))
    assert "Paris" in answer


@pytest.mark.parametrize("chunk", [1, 5, 16])
def test_incremental_prefill_matches_full_forward(llm, chunk):
    ids = torch.tensor([llm.chat_ids("Tell me something about the moon.")])
    emb = llm.embed(ids)
    with torch.no_grad():
        full = llm(emb).logits
    with llm.streaming(1):
        parts = [llm.prefill(emb[:, s : s + chunk], with_logits=True).logits for s in range(0, ids.shape[1], chunk)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=2e-4, rtol=1e-4)


def test_greedy_stream_decode_matches_full_forward_argmax(llm):
    ids = llm.chat_ids("Name a color.")
    with llm.streaming(1):
        out = llm.prefill_ids(torch.tensor([ids]))
        tokens = [t for t, _ in llm.generate_stream(out.logits[0, -1], max_new_tokens=8, repetition_penalty=1.0)]
    assert tokens
    seq = torch.tensor([ids + tokens])
    with torch.no_grad():
        logits = llm(llm.embed(seq)).logits[0]
    # each generated token is the argmax of the full forward at the previous position
    expected = logits[len(ids) - 1 : len(ids) - 1 + len(tokens)].argmax(-1).tolist()
    assert tokens == expected


def test_rows_reset_independently(tiny_llm):
    emb = tiny_llm.embed(torch.randint(0, 1000, (2, 12)))
    with tiny_llm.streaming(2):
        tiny_llm.prefill(emb[:, :6])
        tiny_llm.reset_streaming(torch.tensor([True, False]))
        out = tiny_llm.prefill(emb[:, 6:], with_logits=True).logits
    with torch.no_grad():
        fresh_row0 = tiny_llm(emb[:1, 6:]).logits
        cont_row1 = tiny_llm(emb[1:, :]).logits[:, 6:]
    torch.testing.assert_close(out[:1], fresh_row0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1:], cont_row1, atol=1e-5, rtol=1e-5)


def test_context_is_preallocated_and_bounded(tiny_llm):
    n = tiny_llm.cfg.max_context
    emb = tiny_llm.embed(torch.zeros(1, n, dtype=torch.long))
    with tiny_llm.streaming(1):
        buf = tiny_llm.streaming_state.cache.keys_buf
        tiny_llm.prefill(emb)
        assert tiny_llm.streaming_state.cache.keys_buf is buf  # nothing reallocated
        assert int(tiny_llm.free_slots()[0]) == 0
        with pytest.raises(ContextFullError):
            tiny_llm.prefill(emb[:, :1])


def test_llm_weights_unchanged_by_adapter_training_step(llm):
    """Gradients flow through the frozen LLM into an adapter; the LLM itself never changes."""
    llm.assert_frozen()
    before = {k: v.clone() for k, v in llm.model.state_dict().items()}
    adapter = torch.nn.Linear(16, llm.hidden_size)
    opt = torch.optim.AdamW(adapter.parameters(), lr=1e-2)
    ids = torch.tensor([llm.encode_text(" Paris is the capital of France.")])
    feats = torch.randn(1, 4, 16)
    emb = torch.cat([adapter(feats), llm.embed(ids)], dim=1)
    logits = llm(emb).logits[:, 3:-1]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1))
    loss.backward()
    assert adapter.weight.grad is not None and adapter.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in llm.model.parameters())
    opt.step()
    llm.train()  # a surrounding module going to train mode must not unfreeze it
    llm.assert_frozen()
    after = llm.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bf16_option(default_cfg):
    import dataclasses

    from agent.llm import load_llm

    llm16 = load_llm(dataclasses.replace(default_cfg.llm, dtype="bfloat16"))
    assert llm16.dtype == torch.bfloat16
    assert "Paris" in "".join(llm16.answer("What is the capital of France?"))


def test_int8_weight_linear_matches_its_dequantized_weight_and_falls_back_for_large_blocks():
    from agent.llm_quant import Int8WeightLinear

    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48)
    q = Int8WeightLinear.from_linear(lin, max_rows=4)
    w = lin.weight.detach()
    # Rounding to the nearest of 255 levels per row: each weight is off by at most half a step.
    step = w.abs().amax(1, keepdim=True) / 127
    assert ((q.dequantized() - w).abs() <= step / 2 + 1e-7).all()
    x = torch.randn(2, 2, 64)  # 4 rows: the int8 path
    expected = torch.nn.functional.linear(x, q.dequantized(), lin.bias.detach())
    torch.testing.assert_close(q(x), expected, atol=1e-5, rtol=1e-5)
    assert not torch.equal(q(x), lin(x))  # it really multiplies by the rounded weights
    y = torch.randn(5, 64)  # 5 rows: the other kernel, the same rounded weights
    torch.testing.assert_close(q(y), torch.nn.functional.linear(y, q.dequantized(), lin.bias.detach()))
    torch.testing.assert_close(torch.cat([q(y[:3]), q(y[3:])]), q(y), atol=1e-5, rtol=1e-5)


def test_int8_weights_option_replaces_the_decoder_linears_and_keeps_the_model(tiny_cfg, tiny_llm):
    import dataclasses

    from agent.llm import load_llm
    from agent.llm_quant import Int8WeightLinear

    with pytest.raises(ValueError, match="llm.weights"):
        load_llm(dataclasses.replace(tiny_cfg.llm, weights="int4"))
    q = load_llm(dataclasses.replace(tiny_cfg.llm, weights="int8", fast_decoder=False))  # fused: test_llm_fast
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in tiny_llm.model.base_model.layers.modules())
    assert n_linear > 0
    assert sum(isinstance(m, Int8WeightLinear) for m in q.model.base_model.layers.modules()) == n_linear
    assert not any(isinstance(m, torch.nn.Linear) for m in q.model.base_model.layers.modules())
    q.assert_frozen()
    # Decoding token by token (one row: int8) stays close to the native model.
    ids = torch.randint(0, 1000, (1, 10))
    outs = []
    for model in (tiny_llm, q):
        with model.streaming(1):
            outs.append(torch.cat([model.prefill_ids(ids[:, i : i + 1]).logits for i in range(10)], 1))
    cos = torch.nn.functional.cosine_similarity(outs[0].float(), outs[1].float(), dim=-1)
    assert cos.min() > 0.99 and not torch.equal(outs[0], outs[1])
