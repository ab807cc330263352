"""Streaming unit decoder: exact against offline, causal, click-free at chunk joins.

Uses the real bundled Piper decoder; the front end is randomly initialised where only the
streaming arithmetic is under test (the trained weights are tested in test_tts_trained.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.streaming_conv import PolyphaseUpsample
from agent.tts import HOP, UNIT_SAMPLES, UnitTTSConfig, build_tts, frames_before, regulate, unit_durations

TOL = dict(atol=1e-5, rtol=0)  # streamed vs offline: identical arithmetic, float reassociation only


@pytest.fixture(scope="module")
def vits(default_cfg):
    from agent.piper_torch import load_vits

    torch.set_num_threads(1)
    return load_vits(default_cfg.voice)[0]


@pytest.fixture(scope="module")
def tts(vits):
    torch.manual_seed(0)
    model = build_tts(UnitTTSConfig(lookahead=2, unit_blocks=2, frame_blocks=2), vits.dec).eval()
    with torch.no_grad():  # a non-trivial duration head, so the regulator sees uneven durations
        model.upsampler.duration.conv.weight.normal_(0, 0.05)
    return model


@pytest.fixture(scope="module")
def piper_latents(voice):
    syn = voice.render("Streaming speech should sound the same in pieces as in one go.", seed=3)
    return torch.from_numpy(syn.sentences[0].latents)[None], syn.sentences[0]


def _stream_vocoder(voc, z, chunk):
    t = z.shape[-1]
    pieces, first_pos = [], None
    with voc.streaming(z.shape[0]):
        for i in range(0, t, chunk):
            a, pos = voc.step(z[..., i : i + chunk])
            first_pos = pos if first_pos is None else first_pos
            pieces.append(a)
        end = torch.full((z.shape[0],), t)
        for _ in range(voc.delay_frames):
            pieces.append(voc.step(torch.zeros(z.shape[0], z.shape[1], 1), end=end)[0])
    audio = torch.cat(pieces, -1)
    start = int(-first_pos[0])
    return audio[:, start : start + t * HOP]


def test_polyphase_upsampler_equals_conv_transpose():
    torch.manual_seed(1)
    for c_in, c_out, k, s in ((8, 4, 16, 8), (6, 3, 8, 4), (5, 2, 6, 2)):
        t = torch.nn.ConvTranspose1d(c_in, c_out, k, s, padding=(k - s) // 2)
        x = torch.randn(2, c_in, 11)
        torch.testing.assert_close(PolyphaseUpsample.from_transposed(t)(x), t(x), atol=1e-6, rtol=0)


def test_vocoder_offline_equals_piper_decoder(tts, vits, piper_latents):
    z, _ = piper_latents
    with torch.no_grad():
        torch.testing.assert_close(tts.decoder(z), vits.dec(z)[:, 0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk", [1, 3, 14])
def test_vocoder_streamed_equals_offline_on_real_latents(tts, piper_latents, chunk):
    z, _ = piper_latents
    with torch.no_grad():
        torch.testing.assert_close(_stream_vocoder(tts.decoder, z, chunk), tts.decoder(z), **TOL)


def test_regulator_frame_grid_is_exact():
    # 25 Hz units on a 86.13 Hz frame grid: round(n * 882 / 256) frames, each in the unit holding its centre
    h = torch.arange(10, dtype=torch.float32)[None, None, :]
    d = torch.full((1, 10), UNIT_SAMPLES)
    frames, n, first = regulate(h, d, torch.tensor([10]))
    assert int(n[0]) == round(10 * UNIT_SAMPLES / HOP) == 34
    unit_of_frame = frames[0, 0, :34].long()
    centres = torch.arange(34) * HOP + HOP // 2
    assert torch.equal(unit_of_frame, (centres - 1) // UNIT_SAMPLES)
    # a window cropped at unit 3 sits on the same grid (offset), as training windows do
    crop, m, first = regulate(h[..., 3:], d[:, 3:], torch.tensor([7]), torch.tensor([3 * UNIT_SAMPLES]))
    assert int(first[0]) == int(frames_before(torch.tensor(3 * UNIT_SAMPLES)))
    assert torch.equal(crop[0, 0, : int(m[0])], frames[0, 0, int(first[0]) : 34])


@pytest.mark.parametrize("chunk", [1, 4, 7])
def test_unit_tts_streamed_equals_offline(tts, chunk):
    torch.manual_seed(2)
    units = torch.randint(0, 500, (2, 19))
    with torch.no_grad():
        ref = tts(units)
        rows: list[list[torch.Tensor]] = [[], []]
        with tts.streaming(2):
            for i in range(0, 19, chunk):
                out = tts(units[:, i : i + chunk], final=i + chunk >= 19)
                for r in range(2):
                    rows[r].append(out.row(r))
    for r in range(2):
        torch.testing.assert_close(torch.cat(rows[r]), ref.audio[r, : int(ref.lengths[r])], **TOL)


def test_unit_tts_per_row_reset_restarts_only_that_row(tts):
    torch.manual_seed(3)
    a, b = torch.randint(0, 500, (1, 12)), torch.randint(0, 500, (1, 12))
    with torch.no_grad():
        ref_b = tts(b).audio[0]
        rows: list[list[torch.Tensor]] = [[], []]
        with tts.streaming(2):
            tts(torch.cat([a[:, :4], a[:, :4]]))  # row 1 starts with garbage ...
            tts.reset_streaming(torch.tensor([False, True]))  # ... then restarts with b
            for i in range(0, 12, 4):
                out = tts(torch.cat([a[:, 4 + i : 8 + i] if i < 8 else a[:, :0].new_zeros(1, 4), b[:, i : i + 4]]),
                          final=i + 4 >= 12)
                rows[1].append(out.row(1))
    torch.testing.assert_close(torch.cat(rows[1]), ref_b[: len(torch.cat(rows[1]))], **TOL)
    assert len(torch.cat(rows[1])) == len(ref_b)


def test_unit_tts_is_causal_beyond_its_lookahead(tts):
    torch.manual_seed(4)
    units = torch.randint(0, 500, (1, 20))
    changed = units.clone()
    changed[:, 12:] = torch.randint(0, 500, (1, 8))
    with torch.no_grad():
        pa, pb = [], []
        with tts.streaming(1):
            for i in range(0, 12, 4):
                pa.append(tts(units[:, i : i + 4]).row(0))
        with tts.streaming(1):
            for i in range(0, 12, 4):
                pb.append(tts(changed[:, i : i + 4]).row(0))
    # audio emitted before unit 12 arrived cannot depend on units >= 12
    torch.testing.assert_close(torch.cat(pa), torch.cat(pb), atol=0, rtol=0)
    assert len(torch.cat(pa)) > 0
    # ... and what was emitted covers the units up to 12 minus lookahead and the decoder delay
    with torch.no_grad():
        durations = unit_durations(tts.offline(units, vocode=False).log_scale)
    covered = int(durations[0, : 12 - tts.cfg.lookahead].sum())
    expect = int(frames_before(torch.tensor(covered))) * HOP - tts.decoder.delay_samples
    assert abs(len(torch.cat(pa)) - expect) <= HOP


def _step_ratio(audio: np.ndarray, positions: list[int]) -> float:
    """Mean over positions of |x[j] - x[j-1]| / median |sample step| in the 5 ms around j.

    A click at a chunk join is a step much larger than the local sample-to-sample changes;
    speech itself scores ~1-1.5 anywhere.
    """
    d = np.abs(np.diff(audio))
    ratios = []
    for j in positions:
        if 120 < j < len(d) - 120:
            local = np.concatenate([d[j - 120 : j - 2], d[j + 1 : j + 120]])
            ratios.append(d[j - 1] / (np.median(local) + 1e-6))
    return float(np.mean(ratios))


def test_no_clicks_at_chunk_joins(tts, piper_latents):
    z, _ = piper_latents
    chunk = 7
    with torch.no_grad():
        streamed = _stream_vocoder(tts.decoder, z, chunk)[0].numpy()
        naive = torch.cat([tts.decoder(z[..., i : i + chunk]) for i in range(0, z.shape[-1], chunk)], -1)[0].numpy()
    joins = list(range(chunk * HOP, len(streamed), chunk * HOP))
    anywhere = list(np.random.default_rng(0).integers(200, len(streamed) - 200, 200))
    baseline = _step_ratio(streamed, anywhere)
    # streamed audio: the sample steps at chunk joins are like the steps anywhere else
    assert _step_ratio(streamed, joins) < 1.5 * baseline
    # control: chunks decoded on their own (no cached context) click at the joins; the measure sees it
    assert _step_ratio(naive, joins) > 3 * baseline
