"""LoRA emotion plugins (peft) on the unit decoder: distinct, batchable, switchable, portable."""

from __future__ import annotations

import statistics

import pytest
import torch

from agent.tts import UnitTTSConfig, build_tts
from agent.tts_emotion import EmotionTTS, lora_parameter_count, lora_targets, parse_scheme

SMALL = UnitTTSConfig(unit_blocks=2, frame_blocks=2, lookahead=1)


@pytest.fixture(scope="module")
def piper_dec(default_cfg):
    from agent.piper_torch import load_vits

    torch.set_num_threads(1)
    return load_vits(default_cfg.voice)[0].dec


def _with_plugins(piper_dec, seed: int = 0) -> EmotionTTS:
    torch.manual_seed(seed)
    tts = build_tts(SMALL, piper_dec).eval()
    emo = EmotionTTS(tts)
    emo.add_plugin("happy", "all", 4)
    emo.add_plugin("sad", "frontend+decoder", 2)
    with torch.no_grad():  # fresh LoRA is the identity (B = 0); give the adapters an effect
        g = torch.Generator().manual_seed(seed)
        for name, p in tts.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return emo


@pytest.fixture(scope="module")
def emo(piper_dec):
    return _with_plugins(piper_dec)


@pytest.fixture(scope="module")
def units():
    return torch.randint(0, 500, (3, 16), generator=torch.Generator().manual_seed(1))


def _speak(emo: EmotionTTS, units: torch.Tensor, emotion: str) -> torch.Tensor:
    emo.set_emotion(emotion)
    with torch.no_grad():
        return emo(units).audio


def test_schemes_name_positions(piper_dec):
    assert parse_scheme("decoder+frontend") == ("frontend", "decoder")
    assert parse_scheme("all") == ("frontend", "upsampler", "decoder")
    with pytest.raises(ValueError, match="unknown LoRA position"):
        parse_scheme("flow")
    tts = build_tts(SMALL, piper_dec)
    names = lora_targets(tts, "upsampler")
    assert "upsampler.duration.conv" in names and all(n.startswith("upsampler.") for n in names)
    # the decoder's upsamplers are Conv1d now, so LoRA reaches them
    assert "decoder.ups.0.conv" in lora_targets(tts, "decoder")


def test_base_happy_sad_all_differ(emo, units, piper_dec):
    base, happy, sad = (_speak(emo, units[:1], e) for e in ("neutral", "happy", "sad"))
    for a, b in ((base, happy), (base, sad), (happy, sad)):
        assert (a - b).abs().max() > 1e-3
    # neutral is exactly the decoder without plugins
    plain = build_tts(SMALL, piper_dec).eval()
    plain.load_state_dict({k.replace(".base_layer", ""): v for k, v in emo.tts.state_dict().items() if ".lora_" not in k})
    with torch.no_grad():
        torch.testing.assert_close(base, plain(units[:1]).audio, atol=0, rtol=0)


def test_mixed_batch_equals_single_adapter_outputs(emo, units):
    rows = ["happy", "neutral", "sad"]
    emo.set_emotion("neutral")
    with torch.no_grad():
        mixed = emo(units, emotions=rows).audio
    for i, e in enumerate(rows):
        torch.testing.assert_close(mixed[i], _speak(emo, units[i : i + 1], e)[0], atol=1e-5, rtol=0)
    assert emo.emotion == "sad"  # per-row emotions do not change the selected one


def test_streamed_mixed_batch_equals_offline(emo, units):
    rows = ["sad", "happy", "neutral"]
    emo.set_emotion("neutral")
    with torch.no_grad():
        ref = emo(units, emotions=rows)
        pieces: list[list[torch.Tensor]] = [[], [], []]
        with emo.streaming(3):
            for i in range(0, 16, 5):
                out = emo(units[:, i : i + 5], emotions=rows, final=i + 5 >= 16)
                for r in range(3):
                    pieces[r].append(out.row(r))
    for r in range(3):
        torch.testing.assert_close(torch.cat(pieces[r]), ref.audio[r, : int(ref.lengths[r])], atol=1e-5, rtol=0)


def test_plugin_save_load_round_trip_is_exact(emo, units, piper_dec, tmp_path):
    path = emo.save_plugin("happy", tmp_path / "happy.safetensors")
    fresh = EmotionTTS(build_tts(SMALL, piper_dec).eval())
    base = {k.replace(".base_layer", ""): v for k, v in emo.tts.state_dict().items() if ".lora_" not in k}
    fresh.tts.load_state_dict(base)
    info = fresh.load_plugin(path)
    assert (info.scheme, info.rank) == ("all", 4)
    torch.testing.assert_close(_speak(fresh, units[:1], "happy"), _speak(emo, units[:1], "happy"), atol=0, rtol=0)
    sd_a, sd_b = emo.plugin_state_dict("happy"), fresh.plugin_state_dict("happy")
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    # only the plugin is in the file: small, safetensors
    assert path.stat().st_size < 4 * info.parameters + 20_000


def test_switching_emotion_is_cheap(emo):
    times = [emo.set_emotion(e) for _ in range(30) for e in ("happy", "neutral", "sad")]
    assert statistics.median(times) < 0.005


def test_unknown_emotion_is_a_clear_error(emo, units):
    with pytest.raises(KeyError, match="no emotion plugin 'bored'"):
        emo.set_emotion("bored")
    with pytest.raises(ValueError, match="neutral is the decoder without plugins"):
        emo.add_plugin("neutral", "frontend", 2)


def test_plugin_size_matches_its_trainable_parameters(piper_dec):
    tts = build_tts(UnitTTSConfig(), piper_dec)
    total = sum(p.numel() for p in tts.parameters())
    emo = EmotionTTS(tts)
    emo.add_plugin("happy", "frontend+upsampler", 4)
    trainable = sum(p.numel() for p in emo.trainable("happy"))
    assert trainable == lora_parameter_count(tts, "frontend+upsampler", 4)
    assert trainable / total <= 0.02  # the default scheme and rank fit the 2% budget
    assert all(not p.requires_grad for n, p in tts.named_parameters() if ".lora_" not in n)


def test_a_plugin_learns_a_target_emotion(piper_dec):
    """A fresh plugin trained on the latents of a 'teacher' plugin gets close to them (loss falls)."""
    teacher = _with_plugins(piper_dec, seed=3)
    student = EmotionTTS(teacher.tts)  # same base weights, new adapter
    student.peft, student._layers = teacher.peft, teacher._layers
    student.plugins = dict(teacher.plugins)
    student.add_plugin("angry", "frontend+upsampler", 4)
    units = torch.randint(0, 500, (4, 24), generator=torch.Generator().manual_seed(5))
    teacher.set_emotion("sad")  # its LoRA changes the latents but not the durations
    with torch.no_grad():
        target = teacher(units, vocode=False).latents
    student.set_emotion("angry")
    params = student.trainable("angry")
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    student.train()
    for _ in range(40):
        loss = (student(units, vocode=False).latents - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    student.eval()
    assert losses[-1] < 0.6 * losses[0]
