"""Real headless Chromium talking to the duplex agent (the page of ``duplex-agent serve``).

1. The runtime behind the page (tiny preset, always runs): the fake microphone asks a question,
   the agent takes the turn (its untrained head leaves it to the silence fallback), and the page
   receives an event for each state change, the turn's latency record, and the agent's audio.
2. The trained default agent (runs when its trained weights are installed, skips otherwise): the
   fake microphone asks a held-out question; the page goes through listening, thinking, speaking
   and plays the reply. The quality bar (the Whisper judge's transcript of what the page played
   matches the LLM's text answer, WER <= 15%) is a separate `slow` test: not met yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from speech_io.wav import resample, write_wav
from tests.test_browser import _require_browser, chromium

pytestmark = pytest.mark.browser


@contextlib.asynccontextmanager
async def serving_agent(factory, cfg):
    from configs.schema import TransportConfig
    from speech_io.webrtc.server import WebRtcServer

    server = WebRtcServer(factory, dataclasses.replace(TransportConfig(), idle_timeout_s=30.0), cfg.vad)
    runner, port = await server.start("127.0.0.1", 0)
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await factory.aclose()


def _mic_file(tmp: Path, audio16: np.ndarray, lead_s: float, tail_s: float) -> Path:
    x = np.concatenate([np.zeros(int(lead_s * 16000), np.float32), audio16, np.zeros(int(tail_s * 16000), np.float32)])
    path = tmp / "mic48.wav"
    write_wav(path, resample(x, 16000, 48000), 48000)
    return path


async def _talk(url: str, wav: Path, profile: Path, until: str, timeout_s: float, record: bool = False) -> dict:
    # Played once: a looping microphone asks the question again once the file ends, and on a slow
    # machine (AVX2-only, RTF ~1) that barged in on the reply before it was done.
    async with chromium(wav, profile, loop=False) as ctx:
        page = ctx.pages[0] if ctx.pages else await ctx.new_page()
        await page.goto(f"{url}/?autostart=1" + ("&record=1" if record else ""))
        await page.wait_for_function("window.duplex.state === 'connected'", timeout=30000)
        t0 = time.monotonic()
        await page.wait_for_function(until, timeout=int(timeout_s * 1000), polling=200)
        await asyncio.sleep(0.5)
        state = await page.evaluate(
            "({events: duplex.events.map(([, e]) => e), turns: duplex.turns, remote: duplex.remote,"
            " rate: duplex.sampleRate, audio: duplex.remoteAudio.length ? Array.from(duplex.remoteAudio) : [],"
            " stateText: document.getElementById('state').textContent,"
            " responseText: document.getElementById('turn-response').textContent})")
        state["elapsed"] = time.monotonic() - t0
        await page.evaluate("window.duplex.stop()")
        return state


def test_page_follows_the_duplex_agent_through_a_turn(tiny_cfg, speech_sample, tmp_path):
    _require_browser()
    from duplex.session import DuplexAgentFactory

    audio, rate, truth = speech_sample
    first = resample(audio[int((truth[0][0] - 0.05) * rate) : int((truth[0][1] + 0.05) * rate)], rate, 16000)
    wav = _mic_file(tmp_path, first.astype(np.float32), 0.5, 6.0)
    rt = dataclasses.replace(tiny_cfg.runtime, max_reply_s=2.0, metrics_jsonl="")
    cfg = dataclasses.replace(tiny_cfg, runtime=rt)
    factory = DuplexAgentFactory.from_config(cfg)

    async def main():
        async with serving_agent(factory, cfg) as (server, url):
            return await _talk(url, wav, tmp_path / "profile",
                               "window.duplex.events.some(([, e]) => e.type === 'reply_done')", 40.0)

    page = asyncio.run(main())
    states = [e["state"] for e in page["events"] if e["type"] == "state"]
    # An event for each state change, in order.
    i = states.index("thinking")
    assert states[0] == "listening" and states[i + 1] == "speaking" and "listening" in states[i + 2 :]
    kinds = [t["kind"] for t in page["turns"]]
    assert "response" in kinds and page["responseText"] != "-"
    resp = next(t for t in page["turns"] if t["kind"] == "response")
    assert set(resp["parts"]) == {"endpoint", "listen", "llm", "generator", "decoder", "playout"}
    assert any(e["type"] == "emotion" for e in page["events"])
    # The agent's audio reached the page: energy well above the silence floor after the turn.
    rms = np.array([r for _, r in page["remote"]])
    assert (rms > 0.003).sum() >= 20, "no agent audio played in the page"


def _trained_agent_available(cfg) -> str | None:
    from agent.assets import AssetError, load_card, source_path

    for spec, family, role in ((cfg.speech.weights_card, None, None),
                               (cfg.generator.card, "unit-generator", "unit-generator"),
                               (cfg.tts.card, "unit-tts", "tts")):
        if not spec:
            return "a part is configured untrained"
        try:
            card = load_card(spec, family=family, role=role) if family else load_card(spec)
            if card.kind != "random":
                source_path(card)
        except (AssetError, FileNotFoundError, OSError) as exc:
            return f"trained weights for {spec!r} are not installed ({exc})"
    return None


def _ask_the_trained_agent_in_the_page(default_cfg, judge, tmp_path):
    """A held-out spoken question through Chromium to the default agent: (events, answer, heard)."""
    _require_browser()
    why = _trained_agent_available(default_cfg)
    if why:
        pytest.skip(why)
    from duplex.bench.heldout import heldout_material
    from duplex.session import DuplexAgentFactory

    material = heldout_material(default_cfg, 1)
    q = material.questions[0]
    wav = _mic_file(tmp_path, q.audio, 0.5, 12.0)
    cfg = dataclasses.replace(default_cfg, runtime=dataclasses.replace(default_cfg.runtime, metrics_jsonl=""))
    factory = DuplexAgentFactory.from_config(cfg)
    factory.tune_process()

    async def main():
        await factory.warmup()
        async with serving_agent(factory, cfg) as (server, url):
            return await _talk(url, wav, tmp_path / "profile",
                               "window.duplex.events.some(([, e]) => e.type === 'reply_done')", 120.0, record=True)

    page = asyncio.run(main())
    answer = next(e["text"] for e in page["events"] if e["type"] == "text" and e["role"] == "agent" and e["final"])
    audio = np.asarray(page["audio"], dtype=np.float32)
    heard = judge.transcribe(audio, int(page["rate"])).text
    return page, audio, answer, heard


def test_trained_agent_answers_a_spoken_question_in_the_page(default_cfg, judge, tmp_path):
    page, audio, answer, heard = _ask_the_trained_agent_in_the_page(default_cfg, judge, tmp_path)
    states = [e["state"] for e in page["events"] if e["type"] == "state"]
    assert {"listening", "thinking", "speaking"} <= set(states)
    assert answer.strip() and any(e["type"] == "turn" for e in page["events"])
    hop = int(page["rate"]) // 100
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    assert (np.sqrt((frames**2).mean(axis=1)) > 0.003).sum() >= 50, "the page played under 0.5 s of agent audio"
    from agent.text_metrics import wer

    print(f"LLM said {answer!r}; the page played {heard!r}; WER {wer(answer, heard):.2f}")


@pytest.mark.slow
def test_spoken_answer_in_the_page_matches_the_llm_text(default_cfg, judge, tmp_path):
    """Issue 8's bar (WER <= 15%). NOT met by the bundled weights yet: the unit generator was trained
    for ~3,500 CPU steps and says only short replies and the opening words of longer ones (held-out
    reply WER 0.61, see agent/weights/ cards), so this acceptance test is kept out of CI until a
    better generator is bundled."""
    from agent.text_metrics import wer

    _, _, answer, heard = _ask_the_trained_agent_in_the_page(default_cfg, judge, tmp_path)
    score = wer(answer, heard)
    assert score <= 0.15, f"WER {score:.2f}: LLM said {answer!r}, the page played {heard!r}"
