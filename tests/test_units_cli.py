"""CLI of the units and the generator benchmark (bundled codebook, tiny generator)."""

from __future__ import annotations

import json

import numpy as np

from duplex.cli import main
from speech_io.wav import write_wav


def _tone(tmp_path):
    t = np.arange(int(1.3 * 22050)) / 22050
    audio = (0.3 * np.sin(2 * np.pi * 180 * t) * (t > 0.4)).astype(np.float32)
    return write_wav(tmp_path / "x.wav", audio, 22050)


def test_units_extract_offline_equals_streaming_with_the_bundled_codebook(tmp_path, capsys):
    path = _tone(tmp_path)
    assert main(["units", "extract", str(path), "--json"]) == 0
    offline = json.loads(capsys.readouterr().out)
    assert main(["units", "extract", str(path), "--json", "--streaming"]) == 0
    streamed = json.loads(capsys.readouterr().out)
    assert len(offline["units"]) == 33  # ceil(1.3 s * 25)
    assert offline["units"] == streamed["units"]
    assert all(0 <= u < 500 for u in offline["units"])
    # The first 0.4 s are digital silence, the rest a tone: different units.
    assert set(offline["units"][:8]).isdisjoint(offline["units"][14:])


def test_bench_generator_tiny_json(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "generator", "--preset", "tiny", "--json", "--repeats", "1", "--out", str(out)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["bench"] == "generator" and res["chunk_ms"] == 160
    assert 0 < res["step_ms_p50"] and res["rtf"] == res["step_ms_p50"] / 160
    assert json.loads(out.read_text())["step_ms_p50"] == res["step_ms_p50"]
