"""The converted Whisper model, the reference voice and the judge, on real bundled weights."""

import numpy as np
import pytest
import torch

from agent.text_metrics import wer
from speech_io.wav import read_wav, resample

SENTENCES = [
    "The weather is lovely today.",
    "Please turn off the lights when you leave the room.",
    "My favourite fruit is a ripe banana.",
    "We are meeting at the library after lunch.",
    "How far is the train station from here?",
    "She bought three new books at the market.",
    "Could you tell me what time it is?",
    "The children played football in the park.",
    "I would like a cup of hot tea, please.",
    "Our flight leaves early tomorrow morning.",
]


def test_converted_whisper_encoder_matches_ctranslate2(voice):
    import ctranslate2
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    from agent.assets import load_card, prepared_dir, source_path

    audio = resample(voice.synthesize("Testing the converted speech encoder."), voice.sample_rate, 16000)
    hf_dir = prepared_dir("whisper-tiny-en")
    feats = WhisperFeatureExtractor.from_pretrained(hf_dir)(audio, sampling_rate=16000, return_tensors="np").input_features
    model = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        ours = model.model.encoder(torch.from_numpy(feats)).last_hidden_state.numpy()
    ct2_dir = source_path(load_card("whisper-tiny-en")).parent
    ct2 = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
    ref = np.array(ct2.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats))))
    assert ours.shape == ref.shape == (1, 1500, 384)
    assert np.abs(ours - ref).max() < 1e-3


def test_say_then_transcribe_round_trip(voice, judge):
    hyps = [judge.transcribe(voice.synthesize(s), voice.sample_rate).text for s in SENTENCES]
    assert wer(SENTENCES, hyps) <= 0.10, list(zip(SENTENCES, hyps, strict=True))


def test_judge_word_timestamps_follow_the_audio(voice, judge):
    clip = voice.synthesize("Good morning everyone.")
    rate = voice.sample_rate
    gap = 0.8
    audio = np.concatenate([np.zeros(rate), clip, np.zeros(int(gap * rate)), clip])
    # truth: first and last sample above -40 dB of the clip's peak
    loud = np.flatnonzero(np.abs(clip) > np.abs(clip).max() * 0.01)
    onset, offset = loud[0] / rate, loud[-1] / rate
    words = judge.transcribe(audio, rate).words
    assert [w.text.strip(".,").lower() for w in words] == ["good", "morning", "everyone"] * 2
    assert abs(words[0].start - (1.0 + onset)) < 0.08
    second = 1.0 + len(clip) / rate + gap
    assert abs(words[3].start - (second + onset)) < 0.08
    assert abs(words[-1].end - (second + offset)) < 0.08
    assert all(a.end <= b.start + 1e-6 for a, b in zip(words, words[1:], strict=False))


def test_cli_say_writes_a_wav(tmp_path):
    from duplex.cli import main

    out = tmp_path / "hello.wav"
    assert main(["say", "Hello there.", "-o", str(out)]) == 0
    audio, rate = read_wav(out)
    assert rate == 22050 and 0.4 < len(audio) / rate < 3.0 and np.abs(audio).max() > 0.05


def test_empty_text_is_a_clear_error(capsys):
    from duplex.cli import main

    assert main(["say", "   "]) == 2
    assert "nothing to say" in capsys.readouterr().err


@pytest.mark.parametrize("text, n", [("Hi. How are you? Fine!", 3), ("One, two; three: four.", 1)])
def test_sentence_split(voice, text, n):
    sentences = voice.phonemizer.sentences(text)
    assert len(sentences) == n
    if n == 1:
        assert "," in sentences[0] and ";" in sentences[0] and ":" in sentences[0]
