"""``bench tts``: the streaming unit decoder: first-packet latency, real-time factor, emotion switch.

Units come from Piper renderings of fixed sentences (tokenized before timing: the unit
generator's own cost is not the decoder's). Per sentence the units are fed in chunks of
``tts.chunk_units`` as if each chunk arrived the moment the previous one was decoded; the first
packet time is from handing over the first chunk to the first audio sample coming back
(CosyVoice 2's first-package latency, decoder part). RTF = decode time / audio time, streaming.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from configs import AgentConfig
from duplex.bench.stats import machine, median, percentile
from duplex.bench.voice import SENTENCES


def run(cfg: AgentConfig, repeats: int = 3) -> dict:
    from agent.piper import PiperVoice
    from agent.tts import SAMPLE_RATE
    from agent.tts_emotion import load_emotion_tts
    from agent.tts_units import TextToUnits, tokenizer_for

    tts, identity = load_emotion_tts(cfg)
    to_units = TextToUnits(PiperVoice.load(cfg.voice), tokenizer_for(identity, cfg))
    units = [torch.from_numpy(to_units(t, seed=0))[None] for t in SENTENCES]
    chunk = cfg.tts.chunk_units
    firsts, first_chunks, rtfs, offline_rtfs = [], [], [], []
    with torch.no_grad():
        tts(units[0][:, :8])  # warm-up
        for _ in range(repeats):
            for u in units:
                n = u.shape[1]
                audio_n = 0
                first = None
                t0 = time.perf_counter()
                with tts.streaming(1):
                    for k, i in enumerate(range(0, n, chunk)):
                        out = tts(u[:, i : i + chunk], final=i + chunk >= n)
                        got = int(out.valid[0].sum())
                        if got and first is None:
                            first = time.perf_counter() - t0
                            first_chunks.append(k + 1)
                        audio_n += got
                total = time.perf_counter() - t0
                firsts.append(1000 * (first if first is not None else total))
                rtfs.append(total / (audio_n / SAMPLE_RATE))
                t0 = time.perf_counter()
                out = tts(u)
                offline_rtfs.append((time.perf_counter() - t0) / (int(out.lengths[0]) / SAMPLE_RATE))
        switches = []
        names = ["neutral", *tts.plugins]
        for i in range(60):
            switches.append(1000 * tts.set_emotion(names[i % len(names)]))
        tts.set_emotion("neutral")
    params = sum(p.numel() for n, p in tts.tts.named_parameters() if ".lora_" not in n)
    plugin_params = {e: info.parameters for e, info in tts.plugins.items()}
    return {
        "first_packet_ms_p50": median(firsts),
        "first_packet_ms_p90": percentile(firsts, 90),
        "first_packet_chunks_p50": median(first_chunks) if first_chunks else None,
        "rtf": median(rtfs),
        "rtf_p90": percentile(rtfs, 90),
        "rtf_offline": median(offline_rtfs),
        "emotion_switch_ms": median(switches),
        "emotion_switch_ms_p90": percentile(switches, 90),
        "chunk_units": chunk,
        "algorithmic_latency_ms": tts.tts.latency_ms,
        "decoder_parameters": params,
        "plugin_parameters": plugin_params,
        "plugin_fraction_max": max(plugin_params.values()) / params if plugin_params else 0.0,
        "units": identity,
        "runs": len(rtfs),
        "torch_threads": torch.get_num_threads(),
        "load_average": list(np.round(__import__("os").getloadavg(), 2)),
        "machine": machine(),
    }
