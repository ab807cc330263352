"""``bench encoder``: one 160 ms chunk through encoder -> adapter -> LLM prefill -> state head.

This is the per-chunk work the runtime does while listening (``SpeechListener.step``). Timed on
real speech (espeak-ng) after a warm-up, with the LLM's KV cache filling as a session would;
torch runs ``threads`` threads (the runtime gives each model one worker thread).
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from configs import AgentConfig
from duplex.bench.stats import machine, median, peak_rss_mb, percentile


def _speech(seconds: float) -> np.ndarray:
    from training.synth_speech import espeak

    text = ("The weather should clear up by the afternoon, so we could walk to the harbour and have lunch "
            "by the water before the ferry leaves at four.")
    audio = espeak(text, "en-us+m3", 170, 50)
    reps = int(np.ceil(seconds * 16000 / len(audio)))
    return np.tile(audio, reps)[: int(seconds * 16000)]


def _measure(cfg: AgentConfig, dtype: str, weights: str, encoder_weights: str, repeats: int, chunks: int,
             audio: np.ndarray) -> dict:
    import dataclasses

    from agent.duplex_model import set_encoder_weights
    from agent.llm import load_llm
    from agent.speech_input import load_listener

    llm = load_llm(dataclasses.replace(cfg.llm, dtype=dtype, weights=weights))
    listener = load_listener(cfg.speech, llm)
    set_encoder_weights(listener, encoder_weights)
    n = listener.speech.chunk_samples
    x_all = torch.from_numpy(audio)
    times: list[float] = []
    parts: dict[str, list[float]] = {"encoder": [], "adapter": [], "llm_prefill": [], "state_head": []}
    for _ in range(repeats):
        with torch.inference_mode(), listener.streaming(1):
            listener.step(x_all[None, :n])  # warm-up; also prefills the system prompt + prompt embeddings
            for k in range(1, chunks):
                x = x_all[None, k * n : (k + 1) * n]
                t = time.perf_counter()
                listener.step(x, agent_speaking=torch.tensor([False]))
                times.append(time.perf_counter() - t)
            # The same work split by stage on a few more chunks.
            for k in range(10):
                x = x_all[None, k * n : (k + 1) * n]
                t0 = time.perf_counter()
                frames = listener.speech.encoder.step(x)
                t1 = time.perf_counter()
                emb = listener.speech.adapter.step(frames)
                t2 = time.perf_counter()
                out = llm.prefill(emb)
                t3 = time.perf_counter()
                listener.speech.state_head(out.hidden[:, -1])
                t4 = time.perf_counter()
                for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                    parts[key].append(dt)
    chunk_ms = 1000 * n / 16000
    p50 = 1000 * median(times)
    return {
        "chunk_ms_p50": p50,
        "chunk_ms_p90": 1000 * percentile(times, 90),
        "rtf": p50 / chunk_ms,
        "stages_ms_p50": {k: 1000 * median(v) for k, v in parts.items()},
        "chunk_audio_ms": chunk_ms,
        "llm_positions_per_chunk": listener.speech.positions_per_chunk,
    }


def run(cfg: AgentConfig, repeats: int = 3, chunks: int = 60, threads: int = 1) -> dict:
    """Headline figures use the dtype and weights the runtime loads the LLM with (``runtime.llm_dtype``
    and ``runtime.llm_weights``, else ``llm.*``) and its encoder weights (``runtime.encoder_weights``):
    that is the per-chunk cost a session pays. Both LLM dtypes with everything native (as trained)
    are reported beside it (``by_llm_dtype``)."""
    torch.set_num_threads(threads)
    audio = _speech(chunks * 0.16)
    from agent.duplex_model import runtime_llm_config

    rt = runtime_llm_config(cfg)
    runtime_dtype, runtime_weights = rt.dtype, rt.weights
    encoder_weights = cfg.runtime.encoder_weights
    head = _measure(cfg, runtime_dtype, runtime_weights, encoder_weights, repeats, chunks, audio)
    native = runtime_weights == "native" and encoder_weights == "native"
    by_dtype = {d: head if native and d == runtime_dtype
                else _measure(cfg, d, "native", "native", repeats, chunks, audio) for d in ("float32", "bfloat16")}
    return {
        **head,
        "llm_dtype": runtime_dtype,
        "llm_weights": runtime_weights,
        "encoder_weights": encoder_weights,
        "by_llm_dtype": by_dtype,
        "weights": cfg.speech.weights_card or "untrained",
        "model": cfg.llm.card,
        "threads": threads,
        "chunks": chunks,
        "repeats": repeats,
        "load_average": os.getloadavg()[0],
        "peak_rss_mb": peak_rss_mb(),
        "machine": machine(),
    }
