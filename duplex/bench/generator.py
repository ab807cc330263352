"""``bench generator``: time of one unit-generator step (the user's chunk, then the agent's).

A real reply of the configured LLM (its tokens and hidden states, computed once, untimed) is
streamed into a session as the runtime would, and the user's real chunks arrive one chunk late,
so every step predicts a user chunk, replaces the previous prediction and generates the agent's
chunk while it speaks the reply, with the weights the runtime gives it (``runtime.generator_weights``).
Reported: median / p90 step time and RTF = step / chunk duration (the bar is RTF <= 0.25 on 2
cores), plus the CPU time of the step's thread
(``step_cpu_ms_p50``, ``rtf_cpu``): on a shared, oversubscribed machine the wall time includes
waiting for a core, the CPU time is what the step costs on a free one (with 1 torch thread).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from configs import AgentConfig
from duplex.bench.stats import machine, median, peak_rss_mb, percentile


def _reply(llm, question: str) -> tuple[list[int], list[torch.Tensor]]:
    with llm.streaming(1):
        out = llm.prefill_ids(torch.tensor([llm.chat_ids(question)]))
        pairs = list(llm.generate_stream(out.logits[0, -1]))
    return [t for t, _ in pairs], [h for _, h in pairs]


def run(cfg: AgentConfig, repeats: int = 3, chunks: int = 60) -> dict:
    from agent.duplex_model import convert_linears
    from agent.llm import load_llm
    from agent.unit_generator import load_generator
    from agent.unit_session import open_session

    threads = cfg.generator.num_threads or torch.get_num_threads()
    llm = load_llm(cfg.llm)
    loaded = load_generator(cfg.generator)
    convert_linears(loaded.model, cfg.runtime.generator_weights, "runtime.generator_weights")  # as the runtime runs it
    torch.set_num_threads(threads)
    tokens, hidden = _reply(llm, "What should I cook for dinner tonight?")
    arch = loaded.model.arch
    n = arch.frames_per_chunk
    rng = np.random.default_rng(0)
    silent = sorted(loaded.extra.get("silent_units", [arch.silence_unit]))
    steps_ms: list[float] = []
    cpu_ms: list[float] = []
    speaking = 0
    for r in range(repeats):
        session = open_session(loaded, dataclasses.replace(cfg.generator, seed=r), llm)
        session.start_reply()
        for t, h in zip(tokens, hidden, strict=True):
            session.push_text(t, h)
        session.end_text()
        for k in range(chunks):
            if k >= 2:  # the user's chunk k-2 arrives now: mostly silence, sometimes speech
                units = rng.integers(0, arch.num_units, n) if rng.random() < 0.3 else np.full(n, silent[0])
                session.push_user_chunk(k - 2, units)
            cpu0 = time.thread_time()
            out = session.step()
            cpu = (time.thread_time() - cpu0) * 1000.0
            if k >= 2:  # the first steps warm up the caches
                steps_ms.append(out.step_ms)
                cpu_ms.append(cpu)
            speaking += int(out.speaking)
    p50 = median(steps_ms)
    return {
        "step_ms_p50": p50,
        "step_ms_p90": percentile(steps_ms, 90),
        "step_ms_max": max(steps_ms),
        "chunk_ms": arch.chunk_ms,
        "rtf": p50 / arch.chunk_ms,
        "rtf_p90": percentile(steps_ms, 90) / arch.chunk_ms,
        "step_cpu_ms_p50": median(cpu_ms),
        "rtf_cpu": median(cpu_ms) / arch.chunk_ms,
        "speaking_share": speaking / (repeats * chunks),
        "reply_tokens": len(tokens),
        "steps": len(steps_ms),
        "generator": cfg.generator.card,
        "params_m": sum(p.numel() for p in loaded.model.parameters()) / 1e6,
        "threads": threads,
        "generator_weights": cfg.runtime.generator_weights,
        "peak_rss_mb": peak_rss_mb(),
        "machine": machine(),
    }
