"""CLI of the unit decoder: say (decoder, emotion, reference), bench tts, exp/train help."""

from __future__ import annotations

import json

import pytest

from duplex.cli import main
from speech_io.wav import read_wav


def test_say_through_the_unit_decoder_with_an_emotion(tmp_path, capsys):
    out = tmp_path / "sad.wav"
    assert main(["say", "See you tomorrow.", "--emotion", "sad", "-o", str(out)]) == 0
    assert "unit decoder, sad" in capsys.readouterr().out
    audio, rate = read_wav(out)
    assert rate == 22050 and 0.5 < len(audio) / rate < 4 and abs(audio).max() > 0.05


def test_say_reference_and_bad_emotion(tmp_path, capsys):
    assert main(["say", "Hello.", "--reference", "-o", str(tmp_path / "ref.wav")]) == 0
    assert "reference Piper voice" in capsys.readouterr().out
    assert main(["say", "Hello.", "--emotion", "bored", "-o", str(tmp_path / "x.wav")]) == 2
    assert "bored" in capsys.readouterr().err


def test_bench_tts_json(capsys):
    assert main(["bench", "tts", "--json", "--repeats", "1"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["first_packet_ms_p50"] > 0 and r["rtf"] > 0
    assert 0 <= r["emotion_switch_ms"] < 5
    assert r["plugin_fraction_max"] <= 0.02


@pytest.mark.parametrize("argv", [["train", "tts", "--help"], ["train", "emotion", "--help"], ["exp", "emotion-lora", "--help"]])
def test_training_commands_exist(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "--preset" in capsys.readouterr().out
