"""Streaming == offline for the speech input path (log-mel, encoder, adapter), causality, resets."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from agent.adapter import SpeechAdapter
from agent.encoder import StreamingSpeechEncoder, block_causal_mask, build_encoder
from agent.mel import StreamingLogMel
from configs.schema import AdapterConfig, EncoderConfig

TINY = EncoderConfig(init_card="", d_model=48, layers=2, heads=3, ffn_dim=96, left_chunks=2, rotary_dims=8, dropout=0.0)


def _speechlike(b: int, seconds: float, seed: int = 0) -> torch.Tensor:
    """Bursts of harmonic tones and noise with silences (level changes exercise the running peak)."""
    g = torch.Generator().manual_seed(seed)
    n = int(16000 * seconds)
    t = torch.arange(n) / 16000
    out = torch.zeros(b, n)
    for i in range(b):
        f0 = 100 + 150 * torch.rand(1, generator=g)
        env = (torch.sin(2 * torch.pi * (0.7 + i * 0.3) * t) > -0.2).float() * (0.05 + 0.5 * torch.rand(1, generator=g))
        tone = sum(torch.sin(2 * torch.pi * f0 * k * t) / k for k in range(1, 6))
        out[i] = env * tone + 0.003 * torch.randn(n, generator=g)
    return out


def _stream(enc: StreamingSpeechEncoder, audio: torch.Tensor, step: int) -> torch.Tensor:
    outs = []
    with enc.streaming(audio.shape[0]):
        for i in range(0, audio.shape[1], step):
            outs.append(enc.step(audio[:, i : i + step]))
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("step_hops", [1, 3, 16])
def test_logmel_streamed_equals_offline(step_hops):
    mel = StreamingLogMel(peak_decay=0.01)
    audio = _speechlike(2, 2.4)
    offline = mel(audio)
    outs = []
    with mel.streaming(2):
        for i in range(0, audio.shape[1], 160 * step_hops):
            outs.append(mel.step(audio[:, i : i + 160 * step_hops]))
    torch.testing.assert_close(torch.cat(outs, dim=-1), offline, rtol=1e-5, atol=1e-5)
    # The running peak matters: a quiet start is not clamped at the later loud part's level.
    assert float(offline.std()) > 0.1


def test_logmel_peak_is_causal_and_close_to_whisper_rule():
    mel = StreamingLogMel()
    audio = _speechlike(1, 2.0)
    louder = audio.clone()
    louder[:, 16000:] *= 8.0  # +18 dB in the second half only
    a, b = mel(audio), mel(louder)
    torch.testing.assert_close(a[..., :100], b[..., :100])
    assert not torch.allclose(a[..., 100:], b[..., 100:])


@pytest.mark.parametrize("chunk_ms,left,chunks_per_step", [(160, 2, 1), (160, 0, 1), (80, 3, 2), (40, 5, 3), (160, 12, 2)])
def test_encoder_streamed_equals_offline(chunk_ms, left, chunks_per_step):
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, chunk_ms=chunk_ms, left_chunks=left)
    enc = build_encoder(cfg).eval()
    audio = _speechlike(2, 0.16 * 24, seed=1)  # 24 chunks of 160 ms: the ring buffers wrap many times
    with torch.no_grad():
        offline = enc(audio)
        streamed = _stream(enc, audio, enc.chunk_samples * chunks_per_step)
    assert offline.shape == (2, 24 * 8, cfg.d_model)
    torch.testing.assert_close(streamed, offline, rtol=1e-4, atol=1e-4)


def test_whisper_initialised_encoder_streams_exactly():
    enc = build_encoder(EncoderConfig(dropout=0.0)).eval()  # the bundled Whisper tiny.en weights
    audio = _speechlike(1, 0.16 * 20, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(_stream(enc, audio, enc.chunk_samples), enc(audio), rtol=1e-4, atol=2e-4)


def test_whisper_weights_loaded_by_name():
    from transformers import WhisperForConditionalGeneration

    from agent.assets import prepared_dir

    enc = build_encoder(EncoderConfig())
    ref = WhisperForConditionalGeneration.from_pretrained(prepared_dir("whisper-tiny-en")).model.encoder
    assert torch.equal(enc.stem.conv2.weight, ref.conv2.weight)
    assert torch.equal(enc.layers[3].fc2.weight, ref.layers[3].fc2.weight)
    assert torch.equal(enc.layers[0].self_attn.q_proj.bias, ref.layers[0].self_attn.q_proj.bias)
    assert torch.equal(enc.layer_norm.weight, ref.layer_norm.weight)


def test_encoder_is_causal_across_chunks():
    torch.manual_seed(0)
    enc = build_encoder(TINY).eval()
    audio = _speechlike(1, 0.16 * 10)
    future = audio.clone()
    cut = 6 * enc.chunk_samples
    future[:, cut:] = torch.randn_like(future[:, cut:]) * 0.3
    with torch.no_grad():
        a, b = enc(audio), enc(future)
    frames = 6 * enc.block
    torch.testing.assert_close(a[:, :frames], b[:, :frames])
    assert (a[:, frames:] - b[:, frames:]).abs().max() > 1e-2
    # Streaming: the first 6 chunks' outputs are final before the rest arrives.
    with torch.no_grad():
        torch.testing.assert_close(_stream(enc, future[:, :cut], enc.chunk_samples), a[:, :frames], rtol=1e-4, atol=1e-4)


def test_block_causal_mask_window():
    m = block_causal_mask(8, block=2, left_blocks=1)
    assert m[5].tolist() == [False, False, True, True, True, True, False, False]
    assert m[0].tolist() == [True, True] + [False] * 6


def test_reset_one_row_restarts_only_that_row():
    torch.manual_seed(0)
    enc = build_encoder(TINY).eval()
    audio = _speechlike(2, 0.16 * 8, seed=3)
    n = enc.chunk_samples
    with torch.no_grad():
        fresh = enc(audio[:, 4 * n :])
        whole = enc(audio)
        with enc.streaming(2):
            for i in range(4):
                enc.step(audio[:, i * n : (i + 1) * n])
            enc.reset_streaming(torch.tensor([True, False]))
            outs = [enc.step(audio[:, i * n : (i + 1) * n]) for i in range(4, 8)]
    out = torch.cat(outs, dim=1)
    torch.testing.assert_close(out[0], fresh[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[1], whole[1, 4 * enc.block :], rtol=1e-4, atol=1e-4)


def test_streaming_rejects_partial_chunks():
    enc = build_encoder(TINY)
    with enc.streaming(1), pytest.raises(ValueError, match="whole chunks"):
        enc.step(torch.zeros(1, 1000))


@pytest.mark.parametrize("frames_per_step", [1, 2, 3, 8])
def test_adapter_streamed_equals_offline(frames_per_step):
    torch.manual_seed(0)
    ad = SpeechAdapter(AdapterConfig(stack=4, hidden=32), enc_dim=16, llm_dim=24, embed_rms=0.5).eval()
    frames = torch.randn(2, 48, 16)
    with torch.no_grad():
        offline = ad(frames)
        with ad.streaming(2):
            outs = [ad.step(frames[:, i : i + frames_per_step]) for i in range(0, 48, frames_per_step)]
    torch.testing.assert_close(torch.cat(outs, dim=1), offline)
    assert offline.shape == (2, 12, 24)
    # Outputs sit at the LLM's embedding scale.
    torch.testing.assert_close(offline.pow(2).mean(-1).sqrt(), torch.full((2, 12), 0.5), rtol=1e-3, atol=1e-3)


def test_int8_encoder_layers_stream_close_to_native_and_keep_fp32_state():
    """``runtime.encoder_weights=int8``: the layers' linears take bf16 activations into the int8 kernel
    (8 rows per 160 ms chunk) and return fp32; larger blocks use the same rounded weights in fp32."""
    from agent.llm_quant import Int8WeightLinear, quantize_linears

    torch.manual_seed(0)
    enc = StreamingSpeechEncoder(TINY).eval()
    q = StreamingSpeechEncoder(TINY).eval()
    q.load_state_dict(enc.state_dict())
    assert quantize_linears(q.layers, act_dtype=torch.bfloat16) == 6 * TINY.layers
    audio = _speechlike(1, 1.6)
    chunk = q.chunk_samples
    with torch.no_grad():
        ref, got = _stream(enc, audio, chunk), _stream(q, audio, chunk)
        with q.streaming(1):
            q.step(audio[:, :chunk])
            assert q.layers[0].self_attn.streaming_state.keys.dtype == torch.float32
        offline = q(audio)  # 80 rows: the dequantised fp32 kernel
    assert got.dtype == torch.float32
    rel = ((got - ref).norm() / ref.norm()).item()
    assert 0 < rel < 0.05  # it really runs the rounded weights, and stays close
    torch.testing.assert_close(got, offline, atol=0.05, rtol=0.05)  # one linear map, two kernels
    lin = q.layers[0].fc1
    assert isinstance(lin, Int8WeightLinear) and lin.scales.dtype == torch.bfloat16 and lin.weight.dtype == torch.float32


def test_runtime_encoder_weights_option(default_cfg):
    from agent.duplex_model import set_encoder_weights
    from agent.llm_quant import Fp16Linear, Int8WeightLinear

    class _Listener:  # what set_encoder_weights reads: listener.speech.encoder.layers
        def __init__(self) -> None:
            self.speech = type("S", (), {"encoder": StreamingSpeechEncoder(TINY)})()

    assert default_cfg.runtime.encoder_weights == "fp16"  # what load_duplex_model passes by default
    for mode, kind, want in (("native", Int8WeightLinear, 0), ("int8", Int8WeightLinear, 6 * TINY.layers),
                             ("fp16", Fp16Linear, 6 * TINY.layers)):
        li = _Listener()
        set_encoder_weights(li, mode)
        assert sum(isinstance(m, kind) for m in li.speech.encoder.modules()) == want
    with pytest.raises(ValueError, match="encoder_weights"):
        set_encoder_weights(_Listener(), "int4")
