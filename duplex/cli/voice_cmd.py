"""``duplex-agent say`` (reference voice) and ``duplex-agent transcribe`` (Whisper judge)."""

from __future__ import annotations

import argparse
import sys

from duplex.cli.common import add_config_args, config_from_args, print_json


def register(sub: argparse._SubParsersAction) -> None:
    say = sub.add_parser("say", help="speak text with the reference Piper voice into a wav")
    say.add_argument("text", help="text to speak")
    say.add_argument("-o", "--output", default="say.wav", help="output wav (default: say.wav)")
    say.add_argument("--length-scale", type=float, default=None, help="speaking-rate factor (>1 slower)")
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
    audio = voice.synthesize(args.text, length_scale=args.length_scale)
    path = write_wav(args.output, audio, voice.sample_rate)
    print(f"wrote {path} ({len(audio) / voice.sample_rate:.2f} s, {voice.sample_rate} Hz)")
    return 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    from agent.judge import WhisperJudge

    cfg = config_from_args(args)
    transcript = WhisperJudge(cfg.judge).transcribe_file(args.wav)
    if args.json:
        print_json(transcript.to_dict())
    else:
        print(transcript.text)
    return 0
