"""``bench llm-weights``: what the runtime's LLM weights (fp16 decoder linears, fp32 activations;
bf16 + int8 before 2026-12-07) cost in accuracy.

On held-out typed questions (test-split text of the data issue), the frozen LLM as training
evaluates it (fp32, native weights), as bf16, and as the runtime loads it (``runtime.llm_dtype`` +
``runtime.llm_weights``):

- ``answer_ppl``: perplexity of the fp32 model's own greedy answers, scored by each variant (the
  same text for all, so the figures compare the models, not their answers);
- ``drift``: greedy answers of a variant against the one before it (identical; token-F1 >= 0.6;
  mean token-F1): greedy decoding turns any numeric change into a different continuation sooner
  or later, so bf16 vs fp32 is the scale to read the runtime's figure against.

Speed is ``bench llm`` (its ``fp32_fp16`` and ``bf16_int8`` sections) and ``bench encoder``.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from configs import AgentConfig


def _questions(cfg: AgentConfig, n: int) -> list[str]:
    from training.data.synth import text_pools

    qs = [t for _, t, cut in text_pools(cfg).prompts["test"] if cut is None]
    if not qs:
        raise ValueError("no held-out questions in the test split of the text pools")
    return qs[:n]


def _greedy_answer(llm, question: str, max_new_tokens: int) -> list[int]:
    with llm.streaming(1):
        out = llm.prefill_ids(torch.tensor([llm.chat_ids(question)]))
        return [t for t, _ in llm.generate_stream(out.logits[0, -1], max_new_tokens=max_new_tokens)]


def _answer_nll(llm, question: str, answer: list[int]) -> tuple[float, int]:
    prompt = llm.chat_ids(question)
    if not answer:
        return 0.0, 0
    x = torch.tensor([prompt + answer])
    with torch.no_grad():
        logits = llm(llm.embed(x)).logits[0, len(prompt) - 1 : -1].float()
    nll = -torch.log_softmax(logits, -1).gather(1, x[0, len(prompt) :, None]).sum()
    return float(nll), len(answer)


def run(cfg: AgentConfig, questions: int = 28, max_new_tokens: int = 40, threads: int = 1) -> dict:
    from agent.duplex_model import runtime_llm_config
    from agent.llm import load_llm
    from agent.text_metrics import token_f1

    torch.set_num_threads(threads)
    qs = _questions(cfg, questions)
    rt = runtime_llm_config(cfg)
    runtime = (rt.dtype, rt.weights)
    variants = {"fp32": ("float32", "native"), "bf16": ("bfloat16", "native"),
                "bf16_int8": ("bfloat16", "int8"), "runtime": runtime}
    answers: dict[str, list[str]] = {}
    ppl: dict[str, float] = {}
    reference: list[list[int]] = []
    for name, (dtype, weights) in variants.items():
        llm = load_llm(dataclasses.replace(cfg.llm, dtype=dtype, weights=weights))
        ids = [_greedy_answer(llm, q, max_new_tokens) for q in qs]
        answers[name] = [llm.decode_text(a) for a in ids]
        if name == "fp32":
            reference = ids
        total, count = 0.0, 0
        for q, a in zip(qs, reference, strict=True):
            nll, n = _answer_nll(llm, q, a)
            total, count = total + nll, count + n
        ppl[name] = math.exp(total / count) if count else float("nan")

    def drift(a: str, b: str) -> dict:
        f1 = [token_f1(x, y) for x, y in zip(answers[a], answers[b], strict=True)]
        return {"identical": sum(x == y for x, y in zip(answers[a], answers[b], strict=True)),
                "token_f1_ge_0.6": sum(f >= 0.6 for f in f1), "mean_token_f1": sum(f1) / len(f1)}

    return {
        "runtime_variant": {"dtype": runtime[0], "weights": runtime[1]},
        "questions": len(qs),
        "max_new_tokens": max_new_tokens,
        "answer_ppl": ppl,
        "drift": {"bf16_vs_fp32": drift("bf16", "fp32"), "runtime_vs_bf16": drift("runtime", "bf16"),
                  "runtime_vs_fp32": drift("runtime", "fp32"), "bf16_int8_vs_fp32": drift("bf16_int8", "fp32")},
        "model": cfg.llm.card,
    }
