"""Emotion showcase: one sentence in every emotion of the agent's voice, streamed as the agent does.

    python demos/emotion_showcase.py "I can't believe we won the game!" --out showcase/

Writes one wav per emotion (neutral = the decoder without plugin) plus the reference Piper voice,
and prints, per emotion, the duration, the median F0 and what the emotion classifier hears.
Units come from a Piper rendering of the text (until the unit generator is wired in). The
emotions were learned from SYNTHETIC data (WORLD resynthesis), so they sound acted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    from agent.piper import PiperVoice
    from agent.tts_emotion import NEUTRAL, load_emotion_tts
    from agent.tts_units import TextToUnits, tokenizer_for
    from configs import load_config
    from speech_io.wav import write_wav

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("text", nargs="?", default="I can't believe it, we actually made it on time!")
    p.add_argument("--out", default="showcase", help="output folder")
    p.add_argument("--preset", default="default")
    p.add_argument("--classifier", default=None, help="emotion classifier weights (default: tts_train.emotion_classifier)")
    args = p.parse_args(argv)

    cfg = load_config(args.preset)
    voice = PiperVoice.load(cfg.voice)
    tts, identity = load_emotion_tts(cfg)
    units = TextToUnits(voice, tokenizer_for(identity, cfg))(args.text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_wav(out / "reference_piper.wav", voice.synthesize(args.text, seed=0), voice.sample_rate)
    classifier = _classifier(args.classifier or cfg.tts_train.emotion_classifier)
    print(f"{len(units)} units ({len(units) / 25:.2f} s of speech); plugins: {', '.join(tts.plugins) or 'none'}")
    for emotion in [NEUTRAL, *tts.plugins]:
        ms = 1000 * tts.set_emotion(emotion)
        pieces = []
        with torch.no_grad(), tts.streaming(1):
            for i in range(0, len(units), cfg.tts.chunk_units):
                chunk = torch.from_numpy(units[i : i + cfg.tts.chunk_units])[None]
                pieces.append(tts(chunk, final=i + cfg.tts.chunk_units >= len(units)).row(0))
        audio = torch.cat(pieces).numpy()
        write_wav(out / f"{emotion}.wav", audio, 22050)
        heard = classifier.predict(audio, 22050)[0] if classifier else "-"
        print(f"{emotion:10s} switch {ms:5.2f} ms  {len(audio) / 22050:5.2f} s  F0 {_median_f0(audio):6.1f} Hz  "
              f"classifier: {heard}  -> {out / (emotion + '.wav')}")
    return 0


def _median_f0(audio: np.ndarray) -> float:
    import pyworld as pw

    f0, _ = pw.dio(audio.astype(np.float64), 22050, frame_period=10.0)
    return float(np.median(f0[f0 > 0])) if (f0 > 0).any() else 0.0


def _classifier(path: str):
    from training.data.emotion_classifier import EmotionClassifier

    return EmotionClassifier.load(path) if Path(path).is_file() else None


if __name__ == "__main__":
    sys.exit(main())
