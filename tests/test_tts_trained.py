"""The bundled, trained unit decoder and its emotion plugins (agent/weights/)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

SENTENCES = (
    "The train to the airport leaves every twenty minutes.",
    "Could you remind me to call my sister tomorrow morning?",
)


@pytest.fixture(scope="module")
def trained(default_cfg):
    from agent.tts_emotion import load_emotion_tts

    torch.set_num_threads(1)
    return load_emotion_tts(default_cfg)


@pytest.fixture(scope="module")
def sentence_units(default_cfg, voice, trained):
    from agent.tts_units import TextToUnits, tokenizer_for

    to_units = TextToUnits(voice, tokenizer_for(trained[1], default_cfg))
    return [torch.from_numpy(to_units(s, seed=0))[None] for s in SENTENCES]


def _speak(tts, units, emotion="neutral") -> np.ndarray:
    tts.set_emotion(emotion)
    with torch.no_grad():
        out = tts(units)
    return out.audio[0, : int(out.lengths[0])].numpy()


def test_trained_decoder_is_intelligible(trained, sentence_units, judge):
    from agent.text_metrics import wer

    tts, _ = trained
    heard = [judge.transcribe(_speak(tts, u), 22050).text for u in sentence_units]
    # A regression guard on two easy sentences, NOT the bar (held-out WER <= 10%): the
    # bundled decoder measures 38.3% held-out (agent/weights/TTS_CARD.md) and 21% here.
    assert wer(list(SENTENCES), heard) <= 0.3, heard


def test_trained_decoder_streams_like_offline(trained, sentence_units):
    tts, _ = trained
    units = sentence_units[0]
    ref = _speak(tts, units)
    with torch.no_grad(), tts.streaming(1):
        pieces = [tts(units[:, i : i + 4], final=i + 4 >= units.shape[1]).row(0) for i in range(0, units.shape[1], 4)]
    torch.testing.assert_close(torch.cat(pieces), torch.from_numpy(ref), atol=1e-4, rtol=0)


def _median_f0(audio: np.ndarray) -> float:
    import pyworld as pw

    f0, _ = pw.dio(audio.astype(np.float64), 22050, frame_period=10.0)
    return float(np.median(f0[f0 > 0]))


def test_plugins_move_the_rate_the_way_their_emotion_does(trained, sentence_units):
    tts, _ = trained
    assert {"happy", "sad"} <= set(tts.plugins)
    u = sentence_units[1]
    neutral, happy, sad = (_speak(tts, u, e) for e in ("neutral", "happy", "sad"))
    # training targets: happy +3 semitones and 8% faster, sad -2.5 semitones and 18% slower; the
    # bundled plugins learned the rate (checked here) but not the pitch (the xfail below)
    assert len(sad) > 1.08 * len(neutral) and len(happy) < len(neutral)
    for info in tts.plugins.values():
        assert info.parameters <= 0.02 * sum(p.numel() for n, p in tts.tts.named_parameters() if ".lora_" not in n)


@pytest.mark.xfail(strict=True, reason="known: the bundled plugins learned the rate but not the pitch (happy "
                   "+0.2, sad -0.2 semitones on this sentence vs +3 / -2.5 targeted); an F0 loss moves pitch only when the "
                   "HiFi-GAN adapts, not through front-end plugins (TTS_CARD.md)")
def test_plugins_move_pitch(trained, sentence_units):
    tts, _ = trained
    u = sentence_units[1]
    neutral, happy, sad = (_median_f0(_speak(tts, u, e)) for e in ("neutral", "happy", "sad"))
    assert happy > neutral * 2 ** (1 / 12) and sad < neutral * 2 ** (-1 / 12)

