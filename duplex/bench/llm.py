"""``bench llm``: prefill and decode throughput of the frozen LLM (fp32, bf16, bf16 with int8 weights,
fp32 with fp16 weights: the runtime's since 2026-12-07), peak RSS."""

from __future__ import annotations

import dataclasses
import time

import torch

from configs import AgentConfig
from duplex.bench.stats import machine, median, peak_rss_mb

_PROMPT = (
    "You are a friendly voice assistant. The user asked about the history of the city they are visiting, "
    "the weather for the weekend, a good place to eat dinner, and how long the train takes to the airport. "
)


def _measure(cfg: AgentConfig, dtype: str, prefill_tokens: int, decode_tokens: int, repeats: int,
             weights: str = "native") -> dict:
    from agent.llm import load_llm

    t0 = time.perf_counter()
    llm = load_llm(dataclasses.replace(cfg.llm, dtype=dtype, weights=weights,
                                       max_context=prefill_tokens + decode_tokens + 8))
    load_s = time.perf_counter() - t0
    ids = llm.encode_text(_PROMPT * (1 + prefill_tokens // 30))[:prefill_tokens]
    prompt = torch.tensor([ids])
    prefill_s, decode_s = [], []
    for _ in range(repeats):
        with llm.streaming(1):
            t = time.perf_counter()
            out = llm.prefill_ids(prompt)
            prefill_s.append(time.perf_counter() - t)
            token = int(out.logits[0, -1].argmax())  # type: ignore[index]
            t = time.perf_counter()
            for _ in range(decode_tokens):
                out = llm.prefill_ids(torch.tensor([[token]]))
                token = int(out.logits[0, -1].argmax())  # type: ignore[index]
            decode_s.append(time.perf_counter() - t)
    return {
        "load_s": load_s,
        "prefill_tok_s": prefill_tokens / median(prefill_s),
        "decode_tok_s": decode_tokens / median(decode_s),
        "decode_ms_per_token": 1000 * median(decode_s) / decode_tokens,
        "peak_rss_mb": peak_rss_mb(),
    }


def run(cfg: AgentConfig, repeats: int = 5, prefill_tokens: int = 256, decode_tokens: int = 64) -> dict:
    fp32 = _measure(cfg, "float32", prefill_tokens, decode_tokens, repeats)
    bf16 = _measure(cfg, "bfloat16", prefill_tokens, decode_tokens, repeats)
    bf16_int8 = _measure(cfg, "bfloat16", prefill_tokens, decode_tokens, repeats, weights="int8")
    fp32_fp16 = _measure(cfg, "float32", prefill_tokens, decode_tokens, repeats, weights="fp16")
    return {
        "model": cfg.llm.card,
        # Headline figures are fp32, the dtype training and offline evaluation use; the runtime
        # decodes with fp16 weights and fp32 activations (``runtime.llm_dtype``/``llm_weights``):
        # "fp32_fp16" (int8 weights and bf16 activations before 2026-12-07: "bf16_int8").
        "prefill_tok_s": fp32["prefill_tok_s"],
        "decode_tok_s": fp32["decode_tok_s"],
        "peak_rss_mb": fp32["peak_rss_mb"],
        "load_s": fp32["load_s"],
        "fp32": fp32,
        "bf16": bf16,
        "bf16_int8": bf16_int8,
        "fp32_fp16": fp32_fp16,
        "prefill_tokens": prefill_tokens,
        "decode_tokens": decode_tokens,
        "repeats": repeats,
        "machine": machine(),
    }
