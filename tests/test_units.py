"""Unit tokenizer: k-means codebook, the hubert backend (tiny random HubertConfig), streaming ==
offline, causality, and the phone-purity figures used to judge codebooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.units import (
    HubertUnitFeatures,
    KMeansCodebook,
    UnitError,
    UnitTokenizer,
    build_features,
    fit_codebook,
    kmeans,
)
from training.units_eval import purity_figures


@pytest.fixture(scope="module")
def tiny_hubert_dir(tmp_path_factory):
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    # 50 Hz frames (stride 320) like hubert-base, so the 25 Hz pooling is exercised.
    cfg = HubertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16, 16), conv_stride=(5, 8, 8), conv_kernel=(10, 8, 8),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )
    path = tmp_path_factory.mktemp("hubert")
    HubertModel(cfg).save_pretrained(path)
    return str(path)


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
    x = 0.3 * np.sin(2 * np.pi * np.cumsum(f0) / 16000) * (np.sin(2 * np.pi * 3 * t) > -0.3)
    return (x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    x = torch.cat([c + 0.3 * torch.randn(200, 2, generator=g) for c in centers])
    cent = kmeans(x, 4, iters=10, seed=0)
    dist = torch.cdist(centers, cent).min(1).values
    assert float(dist.max()) < 0.2
    # Deterministic for a seed.
    torch.testing.assert_close(cent, kmeans(x, 4, iters=10, seed=0))


def test_codebook_assigns_nearest_and_round_trips(tmp_path):
    cent = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, -5.0]])
    book = KMeansCodebook(cent, torch.zeros(2), torch.ones(2), torch.tensor([0.9, 0.1, 0.0]), {"backend": "x"})
    feats = torch.tensor([[[0.1, -0.1], [4.0, -4.0], [0.9, 1.2]]])
    assert book(feats).tolist() == [[0, 2, 1]]
    assert book.silent_units() == {0} and book.silence_unit() == 0
    path = book.save(tmp_path / "cb.safetensors")
    again = KMeansCodebook.load(path)
    assert again(feats).tolist() == [[0, 2, 1]] and again.meta == {"backend": "x"}
    with pytest.raises(UnitError):
        KMeansCodebook.load(tmp_path / "missing.safetensors")


@pytest.fixture(scope="module")
def hubert_tokenizer(tiny_hubert_dir):
    feats = HubertUnitFeatures.build(tiny_hubert_dir, layer=2, window_s=0.64, block_ms=160)
    signals = [_speechlike(1.0, s) for s in range(3)] + [np.zeros(8000, np.float32)]
    book = fit_codebook(feats, signals, num_units=16, iters=8, progress=False)
    return UnitTokenizer(feats, book).eval()


def test_hubert_codebook_metadata_rebuilds_the_backend(hubert_tokenizer, tmp_path):
    book = hubert_tokenizer.codebook
    assert book.meta["backend"] == "hubert" and book.meta["layer"] == 2 and book.num_units == 16
    # The all-zero signal was fitted too: some unit is mostly silence.
    assert book.silence.max() > 0.5
    rebuilt = UnitTokenizer(build_features(book.meta), book).eval()
    audio = _speechlike(0.8, 9)
    np.testing.assert_array_equal(rebuilt.extract(audio), hubert_tokenizer.extract(audio))


@pytest.mark.parametrize("piece", [320, 1000, 2560, 7000])
def test_hubert_streaming_equals_offline(hubert_tokenizer, piece):
    audio = _speechlike(2.3, 1)  # longer than the 0.64 s window: the window slides
    offline = hubert_tokenizer.extract(audio)
    assert len(offline) == int(np.ceil(len(audio) / 640))
    with hubert_tokenizer.streaming(1):
        parts = [hubert_tokenizer.push(torch.from_numpy(audio[i : i + piece])[None]) for i in range(0, len(audio), piece)]
        parts.append(hubert_tokenizer.flush())
    streamed = torch.cat(parts, 1)[0].numpy()
    np.testing.assert_array_equal(streamed, offline)
    # And the features themselves, not only their argmin.
    feats = hubert_tokenizer.features
    x = torch.from_numpy(audio[: 5 * 2560])[None]
    with feats.streaming(1):
        streamed_f = torch.cat([feats.step(x[:, i : i + 2560]) for i in range(0, x.shape[1], 2560)], 1)
    torch.testing.assert_close(streamed_f, feats(x), atol=1e-5, rtol=1e-4)


def test_hubert_units_are_causal(hubert_tokenizer):
    audio = _speechlike(1.6, 2)
    changed = audio.copy()
    changed[12800:] = np.random.default_rng(0).standard_normal(len(audio) - 12800).astype(np.float32)
    a, b = hubert_tokenizer.extract(audio), hubert_tokenizer.extract(changed)
    np.testing.assert_array_equal(a[:20], b[:20])  # 12800 samples = 20 units: the past is unchanged
    assert (a[20:] != b[20:]).any()


def test_purity_figures():
    phones = ["a"] * 10 + ["b"] * 10 + ["sil"] * 5
    perfect = [1] * 10 + [2] * 10 + [0] * 5
    f = purity_figures(phones, perfect)
    assert f["phone_purity"] == pytest.approx(1.0) and f["pnmi"] == pytest.approx(1.0)
    f = purity_figures(phones, [7] * 25)  # one unit for everything carries no information
    assert f["pnmi"] == pytest.approx(0.0) and f["phone_purity"] == pytest.approx(0.4)
    split = [1, 3] * 5 + [2] * 10 + [0] * 5  # a phone split across two units is still pure
    f = purity_figures(phones, split)
    assert f["phone_purity"] == pytest.approx(1.0) and f["cluster_purity"] == pytest.approx(0.8)


def _tiny_whisper_features(layer: int = 2):
    from agent.encoder import build_encoder
    from agent.units import WhisperUnitFeatures
    from configs.schema import EncoderConfig

    torch.manual_seed(0)
    cfg = EncoderConfig(init_card="", d_model=64, layers=3, heads=2, ffn_dim=128, left_chunks=4, rotary_dims=8,
                        dropout=0.0)
    return WhisperUnitFeatures(build_encoder(cfg, init_pretrained=False), layer, {"d_model": 64})


@pytest.mark.parametrize("piece", [320, 2560, 6000])
def test_whisper_backend_streaming_equals_offline(piece):
    feats = _tiny_whisper_features()
    assert len(feats.encoder.layers) == 2  # layers above the one read are dropped
    book = fit_codebook(feats, [_speechlike(1.0, s) for s in range(3)], num_units=12, iters=5, progress=False)
    tok = UnitTokenizer(feats, book).eval()
    audio = _speechlike(4.1, 3)  # longer than the encoder's 4 left chunks
    offline = tok.extract(audio)
    with tok.streaming(1):
        parts = [tok.push(torch.from_numpy(audio[i : i + piece])[None]) for i in range(0, len(audio), piece)]
        parts.append(tok.flush())
    np.testing.assert_array_equal(torch.cat(parts, 1)[0].numpy(), offline)
    x = torch.from_numpy(audio[: 10 * 2560])[None]
    with feats.streaming(1):
        streamed = torch.cat([feats.step(x[:, i : i + 2560]) for i in range(0, x.shape[1], 2560)], 1)
    torch.testing.assert_close(streamed, feats(x), atol=1e-4, rtol=1e-4)


def test_whisper_backend_is_causal():
    feats = _tiny_whisper_features()
    a = torch.from_numpy(_speechlike(1.6, 4))[None]
    b = a.clone()
    b[:, 12800:] = torch.randn(1, a.shape[1] - 12800)
    fa, fb = feats(a), feats(b)
    torch.testing.assert_close(fa[:, :20], fb[:, :20])
    assert (fa[:, 20:] - fb[:, 20:]).abs().max() > 1e-3


def test_whisper_backend_with_the_bundled_weights_streams_exactly():
    """The real backend: frozen Whisper tiny.en weights in the block-causal streaming encoder."""
    from agent.units import WhisperUnitFeatures

    feats = WhisperUnitFeatures.build(layer=2)
    assert feats.dim == 384 and feats.block_samples == 2560
    x = torch.from_numpy(_speechlike(3.2, 5))[None]
    with feats.streaming(1):
        streamed = torch.cat([feats.step(x[:, i : i + 2560]) for i in range(0, x.shape[1], 2560)], 1)
    offline = feats(x)
    assert offline.shape == (1, 80, 384)
    torch.testing.assert_close(streamed, offline, atol=2e-4, rtol=1e-4)
    meta = feats.describe()
    assert meta["backend"] == "whisper" and meta["encoder"]["init_card"] == "whisper-tiny-en"


def test_bundled_codebook_loads_and_guards_its_backend(tmp_path, default_cfg):
    import dataclasses

    from agent.units import KMeansCodebook, codebook_path, load_unit_tokenizer

    tok = load_unit_tokenizer(default_cfg.units)
    assert tok.num_units == 500 and tok.codebook.meta["layer"] == 2 and len(tok.silent_units()) > 0
    # A codebook whose recorded probe units no longer match its backend is refused.
    book = KMeansCodebook.load(codebook_path(default_cfg.units.card))
    book.meta["probe_units"] = [(u + 1) % 500 for u in book.meta["probe_units"]]
    path = book.save(tmp_path / "tampered.safetensors")
    with pytest.raises(UnitError, match="features changed"):
        load_unit_tokenizer(dataclasses.replace(default_cfg.units, card=str(path)))
