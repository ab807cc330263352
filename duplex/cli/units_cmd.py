"""``duplex-agent units ...``: speech units and the unit generator.

    units fit      fit a k-means codebook on a corpus (whisper or hubert features)
    units extract  audio file -> 25 Hz units (offline, or streamed in chunks)
    units prepare  corpus manifests -> cached unit dialogues for the generator stages
    units train    stage1 | stage2 | stage3 (the SyncLLM recipes; also `python -m` / torchrun)
    units eval     purity | replies | user  (held-out figures of tokenizer and generator)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from duplex.cli.common import add_config_args, config_from_args, print_json, write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("units", help="speech units: fit/extract the tokenizer, prepare data, train/eval the generator")
    usub = p.add_subparsers(dest="units_cmd", required=True, metavar="ACTION")

    f = usub.add_parser("fit", help="fit a k-means unit codebook")
    f.add_argument("--data", required=True, help="corpus root with manifests/ (or a folder of .wav files)")
    f.add_argument("--out", required=True, help="codebook .safetensors to write")
    f.add_argument("--backend", choices=("whisper", "hubert"), default="whisper")
    f.add_argument("--layer", type=int, default=4, help="encoder layer whose output is quantised")
    f.add_argument("--model", default=None, help="hubert: local HubertModel dir or hub:org/name")
    f.add_argument("--num-units", type=int, default=500)
    f.add_argument("--max-utterances", type=int, default=3000, help="utterances read (agent and user voices)")
    f.add_argument("--agent-share", type=float, default=0.8,
                   help="share of agent-voice utterances (the voice the decoder speaks needs the finer units)")
    f.add_argument("--max-frames", type=int, default=300_000, help="frames k-means is fitted on")
    f.add_argument("--iters", type=int, default=30)
    f.add_argument("--seed", type=int, default=0)
    add_config_args(f)
    f.set_defaults(func=cmd_fit)

    e = usub.add_parser("extract", help="audio file -> 25 Hz units")
    e.add_argument("audio", help="WAV file (any rate, mixed to mono)")
    e.add_argument("--out", default=None, help="write the units as .npy")
    e.add_argument("--streaming", action="store_true", help="feed the audio in 20 ms pieces (same result)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    add_config_args(e)
    e.set_defaults(func=cmd_extract)

    pr = usub.add_parser("prepare", help="corpus -> cached unit dialogues (units, LLM tokens and hidden states)")
    pr.add_argument("--data", default=None, help="corpus root (default: units_train.data_dir)")
    pr.add_argument("--cache", default=None, help="output folder (default: units_train.cache_dir)")
    pr.add_argument("--splits", default="train,val,test")
    pr.add_argument("--limit", action="append", default=[], metavar="KIND=N",
                    help="at most N records of a manifest kind (dialogues, qa, utterances), per split")
    add_config_args(pr)
    pr.set_defaults(func=cmd_prepare)

    from training.units_args import add_recipe_args

    t = usub.add_parser("train", help="run one generator training stage (stage1, stage2, stage3)")
    t.add_argument("stage", choices=("stage1", "stage2", "stage3"))
    add_recipe_args(t)
    t.set_defaults(func=cmd_train)

    x = usub.add_parser("export", help="a trained stage's checkpoint -> a small fp16 generator file (for a card)")
    x.add_argument("checkpoint", help="final.safetensors of a stage (or checkpoints/step-N/generator.safetensors)")
    x.add_argument("--out", required=True, help="generator .safetensors to write")
    x.add_argument("--note", action="append", default=[], metavar="KEY=VALUE", help="provenance stored in the file")
    x.set_defaults(func=cmd_export)

    ev = usub.add_parser("eval", help="held-out figures: purity (tokenizer), replies, user, speech (generator)")
    ev.add_argument("what", choices=("purity", "replies", "user", "speech"))
    ev.add_argument("--data", default=None, help="prepared unit cache (replies, user); default units_train.cache_dir")
    ev.add_argument("--split", default="test")
    ev.add_argument("--limit", type=int, default=40, help="items evaluated")
    ev.add_argument("--out", default=None, help="also write the JSON here")
    ev.add_argument("--decoder", default=None, help="speech: unit decoder card or .safetensors (default tts.card)")
    ev.add_argument("--decoder-codebook", default=None,
                    help="speech: the codebook the decoder was trained on, when it is not the current one")
    ev.add_argument("--temperature", type=float, default=None,
                    help="speech: sampling temperature of the generator (default generator.temperature)")
    ev.add_argument("--kinds", default="qa",
                    help="speech: dialogue kinds spoken, comma-separated: qa (answers after a spoken question) "
                         "and/or utterance (agent sentences alone, as in the stage-1/2 caches)")
    add_config_args(ev)
    ev.set_defaults(func=cmd_eval)


def _signals(data: str, limit: int, agent_share: float = 0.8):
    """Utterance audio at 16 kHz from a corpus (agent and user voices) or a folder of WAVs."""
    from speech_io.wav import read_wav, resample

    root = Path(data).expanduser()
    if (root / "manifests" / "utterances.jsonl").is_file():
        from training.data.manifest import load_manifest

        recs = load_manifest(root, "utterances", "train")
        agent = [r for r in recs if r.role == "agent"]
        user = [r for r in recs if r.role != "agent"]
        # Mostly the agent voice (what the decoder speaks, where unit detail matters most), the
        # rest user voices (what the agent hears: the generator only needs coarser units there).
        n_agent = min(len(agent), int(round(limit * agent_share)))
        n_user = min(len(user), max(0, limit - n_agent), int(round(n_agent * (1 - agent_share) / max(agent_share, 1e-6))))
        picked = agent[:n_agent] + user[:n_user]
        for r in picked:
            yield r.load_audio(16000)
        return
    wavs = sorted(root.rglob("*.wav"))
    if not wavs:
        raise FileNotFoundError(f"{root}: no manifests/utterances.jsonl and no .wav files")
    for w in wavs[:limit]:
        audio, rate = read_wav(w)
        yield resample(audio, rate, 16000) if rate != 16000 else audio


def cmd_fit(args: argparse.Namespace) -> int:
    import torch

    from agent.units import HubertUnitFeatures, WhisperUnitFeatures, fit_codebook

    cfg = config_from_args(args)
    if cfg.units.num_threads:
        torch.set_num_threads(cfg.units.num_threads)
    if args.backend == "whisper":
        feats = WhisperUnitFeatures.build(layer=args.layer)
    else:
        if not args.model:
            print("error: --backend hubert needs --model DIR|hub:org/name", file=sys.stderr)
            return 2
        feats = HubertUnitFeatures.build(args.model, args.layer)
    book = fit_codebook(feats, _signals(args.data, args.max_utterances, args.agent_share), num_units=args.num_units,
                        iters=args.iters, seed=args.seed, max_frames=args.max_frames,
                        description=f"fitted on the train split of {args.data} ({args.max_utterances} utterances max, "
                                    f"agent share {args.agent_share})")
    path = book.save(args.out)
    silent = sorted(book.silent_units())
    print(f"wrote {path}: {book.num_units} units of {book.dim}-d {args.backend} features, "
          f"{len(silent)} silence units (main {book.silence_unit()})")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from agent.units import SAMPLE_RATE, load_unit_tokenizer
    from speech_io.wav import read_wav, resample

    cfg = config_from_args(args)
    tok = load_unit_tokenizer(cfg.units)
    audio, rate = read_wav(args.audio)
    if rate != SAMPLE_RATE:
        audio = resample(audio, rate, SAMPLE_RATE)
    if args.streaming:
        with tok.streaming(1):
            parts = [tok.push(torch.from_numpy(audio[i : i + 320].copy())[None]) for i in range(0, len(audio), 320)]
            parts.append(tok.flush())
        units = torch.cat(parts, dim=1)[0].numpy()
    else:
        units = tok.extract(audio, SAMPLE_RATE)
    if args.out:
        np.save(args.out, units)
    if args.json:
        print_json({"units": units.tolist(), "rate_hz": 25, "seconds": len(audio) / SAMPLE_RATE})
    else:
        print(" ".join(str(int(u)) for u in units))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from agent.llm import load_llm
    from agent.units import load_unit_tokenizer
    from training.unit_data import Preparer, records
    from training.units_common import UnitCorpus

    cfg = config_from_args(args)
    data = args.data or cfg.units_train.data_dir
    cache = Path(args.cache or cfg.units_train.cache_dir).expanduser()
    limits = {}
    for item in args.limit:
        kind, _, n = item.partition("=")
        limits[kind] = int(n)
    tok = load_unit_tokenizer(cfg.units)
    from agent.assets import sha256_file
    from agent.units import codebook_path

    # Cached items are only valid for the codebook and LLM they were made with.
    stamp = {"codebook": sha256_file(codebook_path(cfg.units.card)), "llm": cfg.llm.card,
             "use_hidden": cfg.units_train.use_hidden}
    stamp_path = cache / "prepared-with.json"
    if stamp_path.is_file() and json.loads(stamp_path.read_text()) != stamp:
        print(f"error: {cache} was prepared with another codebook/LLM ({stamp_path}); use a new --cache",
              file=sys.stderr)
        return 2
    cache.mkdir(parents=True, exist_ok=True)
    stamp_path.write_text(json.dumps(stamp, indent=2) + "\n")
    llm = load_llm(cfg.llm)
    prep = Preparer(tok, llm, use_hidden=cfg.units_train.use_hidden)
    book = tok.codebook
    handlers = {"dialogues": prep.dialogue, "qa": prep.qa, "utterances": prep.utterance}
    for split in args.splits.split(","):
        # One file per record, written atomically: a killed run resumes where it stopped.
        item_dir = cache / "items" / split
        item_dir.mkdir(parents=True, exist_ok=True)
        out = []
        for kind, rec in tqdm(list(records(data, split, limits)), desc=f"prepare {split}", unit="item"):
            path = item_dir / f"{rec.id}.pt"
            if path.is_file():
                d = torch.load(path, weights_only=False)
            else:
                d = handlers[kind](rec)
                tmp = path.with_suffix(".pt.tmp")
                torch.save(d, tmp)
                tmp.replace(path)
            if d is not None:
                out.append(d)
        corpus = UnitCorpus(out, book.num_units, sorted(book.silent_units()), book.silence_unit())
        written = corpus.save(cache, split)
        kinds: dict[str, int] = {}
        for d in out:
            kinds[d.kind] = kinds.get(d.kind, 0) + 1
        print(f"{split}: {len(out)} dialogues {kinds} -> {written}")
    print(json.dumps(vars(prep.stats)))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(f"training.units_{args.stage}")
    return int(module.run_from_args(args))


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from agent.unit_generator import count_parameters, load_generator_file, save_generator

    loaded = load_generator_file(args.checkpoint)
    extra = dict(loaded.extra)
    extra["exported_from"] = str(args.checkpoint)
    for item in args.note:
        key, _, value = item.partition("=")
        extra[key] = value
    if "silent_units" not in extra:
        print(f"error: {args.checkpoint} records no silent_units (not a stage export?)", file=sys.stderr)
        return 2
    save_generator(loaded.model, args.out, extra=extra, dtype=torch.float16)
    print(f"wrote {args.out}: {count_parameters(loaded.model) / 1e6:.2f} M parameters (fp16), "
          f"{Path(args.out).stat().st_size / 1e6:.1f} MB")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from training import units_eval

    cfg = config_from_args(args)
    if args.what == "purity":
        result = units_eval.purity_report(cfg, limit=args.limit)
    elif args.what == "replies":
        result = units_eval.replies_report(cfg, args.data, args.split, args.limit)
    elif args.what == "speech":
        result = units_eval.speech_report(cfg, args.data, args.split, args.limit, args.decoder,
                                          args.decoder_codebook, args.temperature,
                                          kinds=tuple(k.strip() for k in args.kinds.split(",") if k.strip()))
    else:
        result = units_eval.user_report(cfg, args.data, args.split, args.limit)
    if args.out:
        write_json(args.out, result)
    print_json(result)
    return 0
