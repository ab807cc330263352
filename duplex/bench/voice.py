"""``bench voice``: real-time factor and time to first audio of the reference Piper voice."""

from __future__ import annotations

from configs import AgentConfig
from duplex.bench.stats import machine, median, percentile

SENTENCES = (
    "The capital of France is Paris.",
    "I think the train leaves at half past seven, so we should hurry.",
    "Sure, I can help with that. What time would you like to go?",
    "It is going to be sunny tomorrow, with a light breeze in the afternoon.",
    "That sounds like a great idea! Let me know how it goes.",
)


def run(cfg: AgentConfig, repeats: int = 3, num_threads: int = 1) -> dict:
    from agent.piper import PiperVoice

    voice = PiperVoice.load(cfg.voice, num_threads=num_threads)
    voice.synthesize("Warm up.")
    rtfs, firsts = [], []
    for _ in range(repeats):
        for text in SENTENCES:
            _, timing = voice.timed(text)
            rtfs.append(timing.total_s / timing.audio_s)
            firsts.append(1000 * timing.first_audio_s)
    return {
        "voice": cfg.voice.card,
        "rtf": median(rtfs),
        "rtf_p90": percentile(rtfs, 90),
        "first_audio_ms": median(firsts),
        "first_audio_ms_p90": percentile(firsts, 90),
        "onnx_threads": num_threads,
        "runs": len(rtfs),
        "machine": machine(),
    }
