"""Audio frames, framing, the ring buffer and the streaming resampler (synthetic signals)."""

import numpy as np
import pytest
from scipy.signal import firwin, resample_poly

from speech_io.frames import AudioFrame, Framer, frame_samples
from speech_io.resample import AudioConverter, StreamingResampler, _kaiser_lowpass, convert_channels
from speech_io.ringbuffer import RingBuffer

RATE_PAIRS = [(48000, 16000), (16000, 48000), (16000, 22050), (22050, 48000), (16000, 24000), (24000, 48000), (44100, 16000)]


def test_ring_buffer_wraps_drops_oldest_and_never_reallocates():
    rb = RingBuffer(8, channels=2)
    storage = rb._buf
    data = np.arange(20, dtype=np.float32).reshape(10, 2)
    assert rb.write(data[:5]) == 0
    np.testing.assert_array_equal(rb.read(3), data[:3])
    assert rb.write(data[5:10]) == 0  # 2 + 5 = 7 stored, wraps around the end
    assert len(rb) == 7
    assert rb.write(data[:3]) == 2  # 10 > 8: the two oldest go
    assert rb.dropped == 2
    np.testing.assert_array_equal(rb.read(8), np.concatenate([data[5:10], data[:3]]))
    out = np.full((4, 2), 7.0, dtype=np.float32)
    rb.write(data[:1])
    assert rb.read_into(out) == 1  # underrun: the rest is zeros
    np.testing.assert_array_equal(out, np.concatenate([data[:1], np.zeros((3, 2), np.float32)]))
    assert rb.write(np.ones((30, 2), np.float32)) == 22  # a block larger than the buffer
    assert len(rb) == 8 and rb._buf is storage


def test_frame_samples_and_frame_validation():
    assert frame_samples(16000) == 320 and frame_samples(22050) == 441 and frame_samples(48000, 10) == 480
    with pytest.raises(ValueError, match="not a whole number"):
        frame_samples(22050, 10)
    with pytest.raises(ValueError, match="float32"):
        AudioFrame(np.zeros(10, np.float32), 16000)
    f = AudioFrame.from_pcm16(np.array([0, 16384, -32768, 32767], np.int16).tobytes(), 16000, 2, timestamp=1.5)
    assert f.channels == 2 and f.num_samples == 2 and f.end == pytest.approx(1.5 + 2 / 16000)
    np.testing.assert_allclose(f.samples, [[0.0, 0.5], [-1.0, 32767 / 32768]])
    assert AudioFrame.from_pcm16(f.pcm16(), 16000, 2).samples == pytest.approx(f.samples, abs=1 / 32768)


@pytest.mark.parametrize("rate", [16000, 22050, 48000])
def test_framer_cuts_exact_frames_with_continuous_timestamps(rate):
    rng = np.random.default_rng(rate)
    x = rng.standard_normal(rate + 7).astype(np.float32)  # 7 samples left for flush()
    framer = Framer(rate)
    frames, pos = [], 0
    while pos < len(x):
        n = int(rng.integers(1, rate // 10))
        frames += framer.push(AudioFrame.from_mono(x[pos : pos + n], rate, 3.0 + pos / rate))
        pos += n
    size = frame_samples(rate)
    assert all(f.num_samples == size for f in frames)
    np.testing.assert_array_equal(np.concatenate([f.samples[:, 0] for f in frames]), x[: len(frames) * size])
    np.testing.assert_allclose([f.timestamp for f in frames], 3.0 + np.arange(len(frames)) * size / rate)
    last = framer.flush()
    assert last is not None and last.num_samples == size
    np.testing.assert_array_equal(last.samples[: len(x) - len(frames) * size, 0], x[len(frames) * size :])


def test_filter_design_matches_scipy_firwin():
    for taps, cutoff in ((61, 1 / 3), (8821, 1 / 441), (6401, 1 / 320)):
        np.testing.assert_allclose(_kaiser_lowpass(taps, cutoff), firwin(taps, cutoff, window=("kaiser", 5.0)), atol=1e-12)


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
def test_streaming_resampler_equals_resample_poly(src, dst):
    """Chunks of random sizes, stereo: streamed output + flush == one offline pass."""
    rng = np.random.default_rng(src + dst)
    x = (0.3 * rng.standard_normal((int(src * 0.61), 2))).astype(np.float32)
    rs = StreamingResampler(src, dst, channels=2)
    chunks, pos = [], 0
    while pos < len(x):
        n = int(rng.integers(1, 3000))
        chunks.append(rs.process(x[pos : pos + n]))
        pos += n
    chunks.append(rs.flush())
    streamed = np.concatenate(chunks)
    offline = resample_poly(x, dst, src, axis=0)
    assert streamed.shape == offline.shape
    np.testing.assert_allclose(streamed, offline, atol=2e-6)
    assert rs.delay_s < 0.001  # the latency the live path pays


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
def test_untrimmed_resampler_gives_whole_frames_and_the_same_signal(src, dst):
    """Live mode: 20 ms in -> exactly 20 ms out, equal to offline shifted by the filter delay."""
    x = (0.3 * np.random.default_rng(1).standard_normal(src // 2)).astype(np.float32)
    live = StreamingResampler(src, dst, trim_delay=False)
    fin, fout = frame_samples(src), frame_samples(dst)
    outs = [live.process(x[i : i + fin]) for i in range(0, len(x), fin)]
    assert all(o.shape[0] == fout for o in outs)
    live_y = np.concatenate(outs)[:, 0]
    d = live.delay_samples
    offline = resample_poly(x, dst, src)
    np.testing.assert_allclose(live_y[d:], offline[: len(live_y) - d], atol=2e-6)


def test_resampler_keeps_the_band_and_removes_aliases():
    t = np.arange(48000) / 48000
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    alias = np.sin(2 * np.pi * 11000 * t).astype(np.float32)  # above 8 kHz: must not fold down
    rs = StreamingResampler(48000, 16000)
    y = np.concatenate([rs.process(tone[i : i + 960]) for i in range(0, 48000, 960)])[:, 0]
    ref = np.sin(2 * np.pi * 1000 * np.arange(len(y)) / 16000)
    mid = slice(1000, len(y) - 1000)
    assert 10 * np.log10(np.mean(ref[mid] ** 2) / np.mean((y[mid] - ref[mid]) ** 2)) > 60  # SNR in dB
    rs = StreamingResampler(48000, 16000)
    z = np.concatenate([rs.process(alias[i : i + 960]) for i in range(0, 48000, 960)])[:, 0]
    assert 20 * np.log10(np.sqrt(np.mean(z[mid] ** 2)) / np.sqrt(0.5)) < -50


def test_audio_converter_48k_stereo_to_16k_mono_timeline():
    conv = AudioConverter(16000, 1)
    rng = np.random.default_rng(0)
    frames = [AudioFrame((0.1 * rng.standard_normal((960, 2))).astype(np.float32), 48000, 10.0 + 0.02 * k) for k in range(10)]
    outs = [conv.convert(f) for f in frames]
    assert all(o is not None and o.num_samples == 320 and o.channels == 1 for o in outs)
    delay = conv.delay_s
    np.testing.assert_allclose([o.timestamp for o in outs], 10.0 - delay + 0.02 * np.arange(10), atol=1e-9)
    mono = np.concatenate([f.samples.mean(axis=1) for f in frames])
    np.testing.assert_allclose(
        np.concatenate([o.samples[:, 0] for o in outs])[int(round(delay * 16000)) :],
        resample_poly(mono, 1, 3)[: 3200 - int(round(delay * 16000))],
        atol=2e-6,
    )
    assert convert_channels(np.ones((4, 1), np.float32), 2).shape == (4, 2)
    with pytest.raises(ValueError, match="cannot map"):
        convert_channels(np.ones((4, 3), np.float32), 2)
