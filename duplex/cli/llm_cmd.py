"""``duplex-agent ask``: stream the frozen LLM's answer; optionally speak it into a wav."""

from __future__ import annotations

import argparse
import sys
import time

from duplex.cli.common import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    ask = sub.add_parser("ask", help="ask the frozen LLM a typed question; stream its answer")
    ask.add_argument("question", help="the question")
    ask.add_argument("-o", "--output", default=None, help="also speak the answer into this wav")
    ask.add_argument("--max-new-tokens", type=int, default=None)
    add_config_args(ask)
    ask.set_defaults(func=cmd_ask)


def cmd_ask(args: argparse.Namespace) -> int:
    from agent.llm import load_llm

    if not args.question.strip():
        print("error: empty question", file=sys.stderr)
        return 2
    cfg = config_from_args(args)
    llm = load_llm(cfg.llm)
    t0 = time.perf_counter()
    first = None
    pieces: list[str] = []
    for piece in llm.answer(args.question, max_new_tokens=args.max_new_tokens):
        if first is None:
            first = time.perf_counter() - t0
        pieces.append(piece)
        sys.stdout.write(piece)
        sys.stdout.flush()
    answer = "".join(pieces).strip()
    sys.stdout.write("\n")
    print(f"[first token {1000 * (first or 0):.0f} ms, {time.perf_counter() - t0:.2f} s total]", file=sys.stderr)
    if args.output:
        from agent.piper import PiperVoice
        from speech_io.wav import write_wav

        if not answer:
            print("error: the LLM gave an empty answer; nothing to speak", file=sys.stderr)
            return 1
        voice = PiperVoice.load(cfg.voice)
        audio = voice.synthesize(answer)
        path = write_wav(args.output, audio, voice.sample_rate)
        print(f"wrote {path} ({len(audio) / voice.sample_rate:.2f} s of the spoken answer)")
    return 0
