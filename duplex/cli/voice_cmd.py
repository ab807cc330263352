"""``duplex-agent say`` (reference voice) and ``duplex-agent transcribe`` (Whisper judge)."""

from __future__ import annotations

import argparse
import sys

from duplex.cli.common import add_config_args, config_from_args, print_json


def register(sub: argparse._SubParsersAction) -> None:
    say = sub.add_parser("say", help="speak text into a wav (the agent's unit decoder; --reference: plain Piper)")
    say.add_argument("text", help="text to speak")
    say.add_argument("-o", "--output", default="say.wav", help="output wav (default: say.wav)")
    say.add_argument("--emotion", default=None, help="neutral, happy, sad, angry or surprised (LoRA plugin)")
    say.add_argument("--reference", action="store_true",
                     help="the plain reference Piper voice instead of the unit decoder")
    say.add_argument("--offline", action="store_true", help="decode in one pass instead of streaming chunks")
    say.add_argument("--seed", type=int, default=0, help="seed of the rendering the units come from")
    say.add_argument("--length-scale", type=float, default=None, help="speaking-rate factor (>1 slower; --reference)")
    add_config_args(say)
    say.set_defaults(func=cmd_say)

    tr = sub.add_parser("transcribe", help="transcribe a wav with the Whisper judge (word timestamps)")
    tr.add_argument("wav", help="input wav file")
    tr.add_argument("--json", action="store_true", help="print words with start/end times as JSON")
    add_config_args(tr)
    tr.set_defaults(func=cmd_transcribe)


def cmd_say(args: argparse.Namespace) -> int:
    from agent.piper import PiperVoice
    from speech_io.wav import write_wav

    if not args.text.strip():
        print("error: nothing to say (empty text)", file=sys.stderr)
        return 2
    cfg = config_from_args(args)
    voice = PiperVoice.load(cfg.voice)
    if args.reference:
        if args.emotion not in (None, "neutral"):
            print("error: --emotion needs the unit decoder (drop --reference)", file=sys.stderr)
            return 2
        audio = voice.synthesize(args.text, length_scale=args.length_scale, seed=args.seed)
        how = "reference Piper voice"
    else:
        try:
            audio, how = _say_units(cfg, voice, args)
        except (KeyError, ValueError) as exc:  # unknown emotion, units of another codebook
            print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
            return 2
    path = write_wav(args.output, audio, voice.sample_rate)
    print(f"wrote {path} ({len(audio) / voice.sample_rate:.2f} s, {voice.sample_rate} Hz, {how})")
    return 0


def _say_units(cfg, voice, args: argparse.Namespace):
    """Text -> units (of the Piper rendering, until the unit generator is wired in) -> unit decoder."""
    import numpy as np
    import torch

    from agent.tts_emotion import load_emotion_tts
    from agent.tts_units import TextToUnits, tokenizer_for

    emotion = args.emotion or cfg.tts.emotion
    tts, identity = load_emotion_tts(cfg, [emotion] if emotion != "neutral" else [])
    units = TextToUnits(voice, tokenizer_for(identity, cfg))(args.text, seed=args.seed)
    tts.set_emotion(emotion)
    with torch.no_grad():
        if args.offline:
            out = tts(torch.from_numpy(units)[None])
            audio = out.audio[0, : int(out.lengths[0])].numpy()
        else:
            pieces = []
            with tts.streaming(1):
                chunk = cfg.tts.chunk_units
                for i in range(0, len(units), chunk):
                    pieces.append(tts(torch.from_numpy(units[i : i + chunk])[None], final=i + chunk >= len(units)).row(0))
            audio = torch.cat(pieces).numpy()
    return np.asarray(audio, dtype=np.float32), f"unit decoder, {emotion}, {len(units)} units"


def cmd_transcribe(args: argparse.Namespace) -> int:
    from agent.judge import WhisperJudge

    cfg = config_from_args(args)
    transcript = WhisperJudge(cfg.judge).transcribe_file(args.wav)
    if args.json:
        print_json(transcript.to_dict())
    else:
        print(transcript.text)
    return 0
