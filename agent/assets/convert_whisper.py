"""CTranslate2 Whisper (model.bin) -> transformers ``WhisperForConditionalGeneration`` directory.

Our own reader of the CT2 binary format (version 6: spec name, revision, named variables with
shape and dtype, then aliases) and a name mapping onto the transformers Whisper modules. CT2
fuses q/k/v (self-attention) and k/v (cross-attention); they are split here. The k projection has
no bias in Whisper, so CT2's fused bias must be zero there; this is checked, not assumed.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np

from agent.assets.cards import AssetError, ModelCard

VERSION = 2

_CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


def read_ct2(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """Read every variable of a CTranslate2 model.bin into numpy arrays (aliases resolved)."""
    variables: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:

        def u(fmt: str) -> int:
            size = struct.calcsize(fmt)
            return struct.unpack(fmt, f.read(size))[0]

        def string() -> str:
            n = u("<H")
            return f.read(n)[:-1].decode("utf-8")

        version = u("<I")
        if version < 5:
            raise AssetError(f"{path}: CTranslate2 binary version {version} is too old (need >= 5)")
        spec = string()
        _revision = u("<I")
        for _ in range(u("<I")):
            name = string()
            rank = u("<B")
            shape = struct.unpack(f"<{rank}I", f.read(4 * rank)) if rank else ()
            dtype = _CT2_DTYPES[u("<B")]
            nbytes = u("<I")
            raw = f.read(nbytes)
            if dtype == "bfloat16":
                arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                arr = np.frombuffer(raw, dtype=np.dtype(dtype))
            variables[name] = arr.reshape(shape)
        for _ in range(u("<I")):
            alias, target = string(), string()
            variables[alias] = variables[target]
    return spec, variables


def _ln(v: dict[str, np.ndarray], src: str, dst: str, out: dict[str, np.ndarray]) -> None:
    out[f"{dst}.weight"] = v[f"{src}/gamma"]
    out[f"{dst}.bias"] = v[f"{src}/beta"]


def _lin(v: dict[str, np.ndarray], src: str, dst: str, out: dict[str, np.ndarray]) -> None:
    out[f"{dst}.weight"] = v[f"{src}/weight"]
    out[f"{dst}.bias"] = v[f"{src}/bias"]


def _split(v: dict[str, np.ndarray], src: str, dsts: list[str], out: dict[str, np.ndarray]) -> None:
    w, b = v[f"{src}/weight"], v[f"{src}/bias"]
    n = len(dsts)
    for i, (wi, bi) in enumerate(zip(np.split(w, n, axis=0), np.split(b, n, axis=0), strict=True)):
        out[f"{dsts[i]}.weight"] = wi
        if dsts[i].endswith("k_proj"):
            if np.abs(bi.astype(np.float32)).max() > 1e-6:
                raise AssetError(f"{src}: non-zero key bias, not a Whisper checkpoint")
        else:
            out[f"{dsts[i]}.bias"] = bi


def _count_layers(v: dict[str, np.ndarray], side: str) -> int:
    pattern = re.compile(rf"^{side}/layer_(\d+)/")
    return 1 + max(int(m.group(1)) for k in v if (m := pattern.match(k)))


def map_state_dict(v: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Map CT2 Whisper variables to transformers names; also return the inferred dimensions."""
    out: dict[str, np.ndarray] = {}
    n_enc, n_dec = _count_layers(v, "encoder"), _count_layers(v, "decoder")
    for name in ("conv1", "conv2"):
        out[f"model.encoder.{name}.weight"] = v[f"encoder/{name}/weight"]
        out[f"model.encoder.{name}.bias"] = v[f"encoder/{name}/bias"]
    out["model.encoder.embed_positions.weight"] = v["encoder/position_encodings/encodings"]
    for i in range(n_enc):
        s, d = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        _ln(v, f"{s}/self_attention/layer_norm", f"{d}.self_attn_layer_norm", out)
        _split(v, f"{s}/self_attention/linear_0", [f"{d}.self_attn.{p}_proj" for p in "qkv"], out)
        _lin(v, f"{s}/self_attention/linear_1", f"{d}.self_attn.out_proj", out)
        _ln(v, f"{s}/ffn/layer_norm", f"{d}.final_layer_norm", out)
        _lin(v, f"{s}/ffn/linear_0", f"{d}.fc1", out)
        _lin(v, f"{s}/ffn/linear_1", f"{d}.fc2", out)
    _ln(v, "encoder/layer_norm", "model.encoder.layer_norm", out)
    out["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    out["model.decoder.embed_positions.weight"] = v["decoder/position_encodings/encodings"]
    for i in range(n_dec):
        s, d = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        _ln(v, f"{s}/self_attention/layer_norm", f"{d}.self_attn_layer_norm", out)
        _split(v, f"{s}/self_attention/linear_0", [f"{d}.self_attn.{p}_proj" for p in "qkv"], out)
        _lin(v, f"{s}/self_attention/linear_1", f"{d}.self_attn.out_proj", out)
        _ln(v, f"{s}/attention/layer_norm", f"{d}.encoder_attn_layer_norm", out)
        _lin(v, f"{s}/attention/linear_0", f"{d}.encoder_attn.q_proj", out)
        _split(v, f"{s}/attention/linear_1", [f"{d}.encoder_attn.{p}_proj" for p in "kv"], out)
        _lin(v, f"{s}/attention/linear_2", f"{d}.encoder_attn.out_proj", out)
        _ln(v, f"{s}/ffn/layer_norm", f"{d}.final_layer_norm", out)
        _lin(v, f"{s}/ffn/linear_0", f"{d}.fc1", out)
        _lin(v, f"{s}/ffn/linear_1", f"{d}.fc2", out)
    _ln(v, "decoder/layer_norm", "model.decoder.layer_norm", out)
    dims = {
        "vocab_size": int(v["decoder/embeddings/weight"].shape[0]),
        "d_model": int(v["decoder/embeddings/weight"].shape[1]),
        "num_mel_bins": int(v["encoder/conv1/weight"].shape[1]),
        "encoder_layers": n_enc,
        "decoder_layers": n_dec,
        "encoder_attention_heads": int(v["encoder/num_heads"]),
        "decoder_attention_heads": int(v["decoder/num_heads"]),
        "encoder_ffn_dim": int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_ffn_dim": int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(v["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(v["decoder/position_encodings/encodings"].shape[0]),
    }
    return out, dims


def convert(card: ModelCard, src: Path, out_dir: Path) -> None:
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    spec, variables = read_ct2(src)
    if spec != "WhisperSpec":
        raise AssetError(f"{src}: CTranslate2 spec is {spec}, expected WhisperSpec")
    ct2_cfg = json.loads((src.parent / "config.json").read_text())
    state, dims = map_state_dict(variables)
    english_only = dims["vocab_size"] == 51864
    sot = 50257 if english_only else 50258
    eot = 50256
    config = WhisperConfig(
        **dims,
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        tie_word_embeddings=True,
    )
    model = WhisperForConditionalGeneration(config)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(a).astype(np.float32)) for k, a in state.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [m for m in missing if m != "proj_out.weight"]  # tied to embed_tokens
    if missing or unexpected:
        raise AssetError(f"whisper conversion mismatch: missing {missing[:4]}, unexpected {unexpected[:4]}")
    model.tie_weights()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
        max_length=dims["max_target_positions"],
        no_timestamps_token_id=50362 if english_only else 50363,
        suppress_tokens=ct2_cfg.get("suppress_ids", []),
        begin_suppress_tokens=ct2_cfg.get("suppress_ids_begin", [220, eot]),
        alignment_heads=ct2_cfg.get("alignment_heads", []),
        is_multilingual=not english_only,
        return_timestamps=False,
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(src.parent / "tokenizer.json"))
    tokenizer.save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=dims["num_mel_bins"]).save_pretrained(out_dir)
