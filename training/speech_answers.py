"""The frozen LLM's own answers to the corpus questions, typed (stage 3's QA targets), cached per LLM.

Written once per (corpus, LLM card) to ``<corpus>/answers-<card>.jsonl`` as ``{"id", "answer",
"ids"}``: the greedy reply under the agent's system prompt, repetition penalty and token cap,
exactly as ``FrozenLLM.answer`` produces it, plus its token ids (the stage-3 target).

    python -m training.speech_answers --preset default --data DIR
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from agent.llm import FrozenLLM, load_llm
from configs import load_config
from training.speech_data import _read_jsonl


def answers_file(llm: FrozenLLM) -> str:
    return "answers-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", llm.cfg.card) + ".jsonl"


@torch.no_grad()
def typed_answer(llm: FrozenLLM, question: str) -> list[int]:
    with llm.streaming(1):
        out = llm.prefill_ids(torch.tensor([llm.chat_ids(question)]))
        assert out.logits is not None
        return [tok for tok, _ in llm.generate_stream(out.logits[0, -1])]


def ensure_answers(llm: FrozenLLM, corpus_dir: str | Path, progress: bool = True) -> str:
    """Compute missing answers (resumable: appends one line per question). Returns the file name."""
    root = Path(corpus_dir)
    name = answers_file(llm)
    path = root / name
    done = {r["id"] for r in _read_jsonl(path)}
    todo = [r for r in _read_jsonl(root / "qa.jsonl") if r["id"] not in done]
    if todo:
        with open(path, "a") as f:
            for r in tqdm(todo, desc="typed answers", disable=not progress):
                ids = typed_answer(llm, r["question"])
                f.write(json.dumps({"id": r["id"], "answer": llm.decode_text(ids).strip(), "ids": ids}) + "\n")
                f.flush()
                os.fsync(f.fileno())
    return name


def load_answer_ids(corpus_dir: str | Path, name: str) -> dict[str, list[int]]:
    return {r["id"]: list(r["ids"]) for r in _read_jsonl(Path(corpus_dir) / name)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="default")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--data", required=True)
    args = p.parse_args(argv)
    llm = load_llm(load_config(args.preset, args.overrides).llm)
    print(ensure_answers(llm, args.data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
