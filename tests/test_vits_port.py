"""Our torch VITS port and the patched ONNX voice against the original Piper ONNX graph."""

import numpy as np
import pytest
import torch

from agent.word_timing import align_words


@pytest.fixture(scope="module")
def torch_voice(default_cfg):
    from agent.piper_torch import TorchPiperVoice

    return TorchPiperVoice.load(default_cfg.voice)


@pytest.fixture(scope="module")
def original_onnx():
    import onnxruntime as ort

    from agent.assets import load_card, source_path

    return ort.InferenceSession(str(source_path(load_card("piper-joe-medium"))), providers=["CPUExecutionProvider"])


def test_torch_port_matches_the_original_onnx_graph(voice, torch_voice, original_onnx):
    # noise scales 0 make the original graph deterministic, so both can be compared sample by sample
    ids = voice.phoneme_ids(voice.phonemizer.sentences("The quick brown fox jumps over the lazy dog.")[0])
    ref = original_onnx.run(None, {
        "input": np.array([ids], dtype=np.int64), "input_lengths": np.array([len(ids)], dtype=np.int64),
        "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32),
    })[0].reshape(-1)
    with torch.no_grad():
        ours = torch_voice.model.infer(torch.tensor([ids]), noise_scale=0.0, noise_w=0.0).audio[0].numpy()
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-4


def test_onnx_and_torch_voices_agree_for_a_seed(voice, torch_voice):
    text = "Hello there, how are you today? I am fine."
    a = voice.render(text, seed=11)
    b = torch_voice.synthesize(text, seed=11)
    assert a.audio.shape == b.audio.shape
    assert np.abs(a.audio - b.audio).max() < 1e-3
    assert [d.tolist() for d in a.durations] == [d.tolist() for d in b.durations]
    assert np.abs(a.latents[0] - b.latents[0]).max() < 1e-3


def test_seeded_synthesis_is_deterministic(voice):
    text = "Same seed, same audio."
    assert np.array_equal(voice.synthesize(text, seed=5), voice.synthesize(text, seed=5))
    assert not np.array_equal(voice.synthesize(text, seed=5), voice.synthesize(text, seed=6))


def test_gradients_flow_through_the_decoder(torch_voice):
    z = torch.randn(1, 192, 20, requires_grad=True)
    audio = torch_voice.model.dec(z)
    assert audio.shape == (1, 1, 20 * 256)
    audio.pow(2).mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_latents_and_durations_are_consistent(voice):
    s = voice.render("A short sentence to check the shapes.", seed=1)
    sent = s.sentences[0]
    assert sent.latents.shape == (192, int(sent.durations.sum()))
    assert len(s.audio) == int(sent.durations.sum()) * s.hop


def test_word_timings_agree_with_the_judge(voice, judge):
    text = "I was thinking about going to the park with my friends tomorrow."
    s = voice.render(text, seed=2)
    heard = judge.transcribe(s.audio, s.sample_rate).words
    assert [w.text for w in s.words] == text.rstrip(".").split()
    assert len(heard) == len(s.words)
    starts = np.array([w.start for w in s.words]) - np.array([w.start for w in heard])
    assert np.median(np.abs(starts)) < 0.08 and np.abs(starts).max() < 0.2


def test_alignment_handles_joined_and_split_words():
    # "of the" joined into one phoneme word; "3.50" split into four
    spans = [(0, 10, 3), (10, 30, 5), (30, 40, 4), (40, 50, 4), (50, 60, 3), (60, 70, 5)]
    out = align_words(["of", "the", "3.50"], spans[:2] + spans[2:])
    assert [w for w, _, _ in out] == ["of", "the", "3.50"]
    out = align_words(["ofthe", "x"], [(0, 10, 4), (10, 20, 1)])
    assert out[0][1:] == (0, 10)
    joined = align_words(["of", "the", "park"], [(0, 10, 4), (12, 30, 4)])
    assert joined[0][1] == 0 and joined[1][2] == 10 and joined[2][1:] == (12, 30)
