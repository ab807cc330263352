"""CLI of the units and the generator benchmark (bundled codebook, tiny generator)."""

from __future__ import annotations

import json

import numpy as np

from duplex.cli import main
from speech_io.wav import write_wav


def _noise_after_silence(tmp_path):
    # Noise, not a pure tone: a codebook fitted on speech may file a steady sine under its
    # "silence" units (the final bundled one does), broadband noise it never confuses with silence.
    t = np.arange(int(1.3 * 22050)) / 22050
    audio = (0.1 * np.random.default_rng(0).standard_normal(len(t)) * (t > 0.4)).astype(np.float32)
    return write_wav(tmp_path / "x.wav", audio, 22050)


def test_units_extract_offline_equals_streaming_with_the_bundled_codebook(tmp_path, capsys):
    path = _noise_after_silence(tmp_path)
    assert main(["units", "extract", str(path), "--json"]) == 0
    offline = json.loads(capsys.readouterr().out)
    assert main(["units", "extract", str(path), "--json", "--streaming"]) == 0
    streamed = json.loads(capsys.readouterr().out)
    assert len(offline["units"]) == 33  # ceil(1.3 s * 25)
    assert offline["units"] == streamed["units"]
    assert all(0 <= u < 500 for u in offline["units"])
    # The first 0.4 s are digital silence, the rest noise: silence units, then other units.
    from agent.units import KMeansCodebook, codebook_path

    silent = KMeansCodebook.load(codebook_path("units-whisper-500")).silent_units()
    assert all(u in silent for u in offline["units"][:8])
    assert not any(u in silent for u in offline["units"][14:])


def test_bench_generator_tiny_json(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "generator", "--preset", "tiny", "--json", "--repeats", "1", "--out", str(out)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["bench"] == "generator" and res["chunk_ms"] == 160
    assert res["generator_weights"] == "fp16"  # timed as the runtime runs it
    assert 0 < res["step_ms_p50"] and res["rtf"] == res["step_ms_p50"] / 160
    # CPU time of one thread cannot exceed the wall time it was measured in (small timer slack).
    assert 0 < res["step_cpu_ms_p50"] <= res["step_ms_p50"] * 1.05 + 0.5
    assert json.loads(out.read_text())["step_ms_p50"] == res["step_ms_p50"]


def test_units_export_writes_fp16_with_provenance(tmp_path, capsys):
    import torch

    from agent.unit_generator import GeneratorArch, UnitGenerator, load_generator_file, save_generator

    torch.manual_seed(0)
    model = UnitGenerator(GeneratorArch(cond_dim=16, use_hidden=False, d_model=32, num_layers=2, num_heads=4),
                          max_context=64).eval()
    src = tmp_path / "final.safetensors"
    save_generator(model, src, extra={"silent_units": [0, 5]}, dtype=torch.float32)
    out = tmp_path / "gen.safetensors"
    assert main(["units", "export", str(src), "--out", str(out), "--note", "data=synthetic"]) == 0
    assert "M parameters (fp16)" in capsys.readouterr().out
    loaded = load_generator_file(out)
    assert loaded.extra["silent_units"] == [0, 5] and loaded.extra["data"] == "synthetic"
    assert loaded.extra["exported_from"] == str(src)
    assert out.stat().st_size < 0.6 * src.stat().st_size  # half-size storage
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items(), strict=True):
        torch.testing.assert_close(b, a.half().float(), msg=name)
    # A step checkpoint records no silence units: refused with a one-line error.
    save_generator(model, src, extra={"step": 3}, dtype=torch.float32)
    assert main(["units", "export", str(src), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "no silent_units" in capsys.readouterr().err


def test_codebook_bridge_maps_units_through_feature_space(tmp_path):
    import torch

    from agent.units import KMeansCodebook, codebook_path
    from training.units_eval import codebook_bridge

    src = codebook_path("units-whisper-500")
    book = KMeansCodebook.load(src)
    assert (codebook_bridge(src, src) == np.arange(book.num_units)).all()
    # The same centroids, shuffled and stored with other standardisation statistics: the bridge
    # undoes the shuffle (it compares in raw feature space, not in either standardised space).
    perm = torch.randperm(book.num_units, generator=torch.Generator().manual_seed(0))
    raw = book.centroids * book.std + book.mean
    mean2, std2 = book.mean + 0.5, book.std * 2.0
    other = KMeansCodebook(((raw - mean2) / std2)[perm], mean2, std2, book.silence[perm], book.meta)
    dst = other.save(tmp_path / "other.safetensors")
    expect = torch.argsort(perm).numpy()  # new id of old unit i
    assert (codebook_bridge(src, dst) == expect).all()
