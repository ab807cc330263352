"""The fast decoder (agent/llm_fast.py) and fp16 weights: same numbers as the transformers forward."""

import dataclasses

import pytest
import torch

from agent.llm import load_llm
from agent.llm_fast import FastDecoder, RowSlice, supports
from agent.llm_quant import Fp16Linear, Int8WeightLinear


def _pair(tiny_cfg, dtype, weights):
    base = dataclasses.replace(tiny_cfg.llm, dtype=dtype, weights=weights)
    return load_llm(dataclasses.replace(base, fast_decoder=False)), load_llm(base)


@pytest.mark.parametrize(("dtype", "weights", "tol"), [("float32", "fp16", 1e-4), ("bfloat16", "int8", 3e-2)])
@pytest.mark.parametrize("chunk", [1, 2, 7])
def test_fast_prefill_equals_transformers_prefill(tiny_cfg, dtype, weights, tol, chunk):
    hf, fast = _pair(tiny_cfg, dtype, weights)
    assert hf.fast is None and isinstance(fast.fast, FastDecoder)
    ids = torch.randint(0, 1000, (1, 23))
    outs = []
    for llm in (hf, fast):
        with llm.streaming(1):
            outs.append(torch.cat([llm.prefill_ids(ids[:, s : s + chunk]).logits
                                   for s in range(0, ids.shape[1], chunk)], 1).float())
    scale = outs[0].abs().max()
    assert (outs[0] - outs[1]).abs().max() <= tol * scale
    assert outs[1].argmax(-1).tolist() == outs[0].argmax(-1).tolist()


def test_fast_rows_with_different_lengths_and_resets(tiny_cfg):
    hf, fast = _pair(tiny_cfg, "float32", "fp16")
    emb = hf.embed(torch.randint(0, 1000, (2, 12)))
    outs = []
    for llm in (hf, fast):
        with llm.streaming(2):
            llm.prefill(emb[:, :6])
            llm.reset_streaming(torch.tensor([True, False]))  # row 0 starts over, row 1 goes on
            outs.append(llm.prefill(emb[:, 6:9], with_logits=True).logits)
            outs.append(llm.prefill(emb[:, 9:], with_logits=True).logits)
    torch.testing.assert_close(outs[2], outs[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(outs[3], outs[1], atol=1e-4, rtol=1e-4)
    # row 0 after its reset == a fresh run of the same 6 embeddings
    with torch.no_grad():
        fresh = fast(emb[:1, 6:]).logits
    torch.testing.assert_close(torch.cat([outs[2][:1], outs[3][:1]], 1), fresh, atol=1e-4, rtol=1e-4)


def test_fused_linears_replace_the_originals_without_copies(tiny_cfg, tiny_llm):
    _, fast = _pair(tiny_cfg, "float32", "fp16")
    layer = fast.model.base_model.layers[0]
    assert all(isinstance(getattr(layer.self_attn, n), RowSlice) for n in ("q_proj", "k_proj", "v_proj"))
    assert isinstance(layer.self_attn.qkv_proj, Fp16Linear) and isinstance(layer.mlp.gate_up_proj, Fp16Linear)
    c = tiny_llm.model.config
    hd = c.hidden_size // c.num_attention_heads
    assert layer.self_attn.qkv_proj.out_features == (c.num_attention_heads + 2 * c.num_key_value_heads) * hd
    # no native linear is left in the decoder blocks: the weights exist once, in fp16
    assert not any(isinstance(m, torch.nn.Linear) for m in fast.model.base_model.layers.modules())
    # the transformers forward still runs, through the slices, to the same numbers
    emb = fast.embed(torch.randint(0, 1000, (1, 9)))
    with fast.streaming(1):
        streamed = fast.prefill(emb, with_logits=True).logits
    with torch.no_grad():
        full = fast(emb).logits
    torch.testing.assert_close(streamed, full, atol=1e-4, rtol=1e-4)
    fast.assert_frozen()


def test_fp16_linear_multiplies_by_fp16_rounded_weights():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48)
    f = Fp16Linear.from_linear(lin)
    x = torch.randn(3, 5, 64)
    w16 = lin.weight.detach().half().float()
    expected = torch.nn.functional.linear(x, w16, lin.bias.detach())
    torch.testing.assert_close(f(x), expected, atol=1e-4, rtol=1e-4)
    assert not torch.equal(w16, lin.weight.detach())  # the rounding is real (and tiny)
    assert f(x.bfloat16()).dtype == torch.bfloat16


def test_fp16_weights_need_float32_activations_and_int8_stays_available(tiny_cfg):
    with pytest.raises(ValueError, match="float32"):
        load_llm(dataclasses.replace(tiny_cfg.llm, dtype="bfloat16", weights="fp16"))
    _, q = _pair(tiny_cfg, "bfloat16", "int8")
    assert isinstance(q.model.base_model.layers[0].mlp.gate_up_proj, Int8WeightLinear)


def test_unsupported_models_keep_the_transformers_forward(tiny_cfg):
    from transformers import AutoConfig, AutoModelForCausalLM

    conf = AutoConfig.for_model("gpt2", n_layer=1, n_embd=32, n_head=2, vocab_size=100)
    assert "model_type" in supports(AutoModelForCausalLM.from_config(conf))
    llm = load_llm(dataclasses.replace(tiny_cfg.llm, dtype="float32", weights="fp16"))
    assert supports(llm.model) is None


@pytest.mark.parametrize("fast_decoder", [True, False])
def test_blocks_of_two_contexts_in_one_pass_equal_a_pass_each(tiny_cfg, fast_decoder):
    """``prefill(also=...)``: a block of another context rides in the same pass (the fast decoder
    stacks the rows of both for every linear), with the results of separate passes."""
    from agent.llm import RidingBlock

    llm = load_llm(dataclasses.replace(tiny_cfg.llm, dtype="float32", weights="fp16", fast_decoder=fast_decoder))
    assert (llm.fast is not None) == fast_decoder
    emb = llm.embed(torch.randint(0, 1000, (1, 20)))
    outs = []
    for together in (False, True):
        a, b = llm.new_streaming_state(1)[""], llm.new_streaming_state(1)[""]
        for st, part in ((a, emb[:, :9]), (b, emb[:, 9:13])):  # two histories of different lengths
            llm.set_streaming_state({"": st})
            llm.prefill(part)
        llm.set_streaming_state({"": a})
        try:
            if together:
                rider = RidingBlock(b, emb[:, 15:16])
                main = llm.prefill(emb[:, 13:15], with_logits=True, also=[rider])
                assert rider.output is not None
                outs.append((main, rider.output))
            else:
                main = llm.prefill(emb[:, 13:15], with_logits=True)
                llm.set_streaming_state({"": b})
                outs.append((main, llm.prefill(emb[:, 15:16], with_logits=True)))
            with pytest.raises(ValueError, match="own context"):
                llm.prefill(emb[:, :1], also=[RidingBlock(llm.streaming_state, emb[:, :1])])
        finally:
            llm.set_streaming_state(None)
        assert (a.lengths.item(), b.lengths.item(), a.positions.item(), b.positions.item()) == (11, 5, 11, 5)
    for sep, tog in zip(outs[0], outs[1], strict=True):
        # A row does not depend on the rows stacked with it beyond float rounding: fbgemm's fp16
        # kernel gave bit-identical rows on an AVX-512 CPU, differences of ~1e-7 on an AVX2-only one
        # (its blocking depends on the row count).
        torch.testing.assert_close(tog.hidden, sep.hidden, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(tog.logits, sep.logits, rtol=1e-5, atol=1e-5)
        assert torch.equal(tog.logits.argmax(-1), sep.logits.argmax(-1))
