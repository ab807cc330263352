"""LoRA emotion plugins for the unit decoder (EELE), with peft.

The neutral decoder (`agent.tts.UnitTTS`) knows no emotion. Each emotion is one named peft LoRA
adapter ("happy", "sad", ...) trained on emotional speech with the base frozen; "neutral" is the
base with every adapter off. Where the LoRA goes is a *scheme*: a '+'-joined set of positions,
EELE's front end / alignment / back end split of VITS mapped onto our blocks:

- ``frontend``  - the unit encoder's convs (EELE: text encoder + projection);
- ``upsampler`` - duration head + frame-rate convs + latent projection (EELE: duration predictor,
  and the flow that turns the prior into acoustic latents);
- ``decoder``   - the HiFi-GAN convs, polyphase upsamplers included (EELE: decoder).

Emotions switch per utterance without reloading (`set_emotion`: peft ``set_adapter`` /
``disable_adapter_layers``), and rows of one batch can use different emotions (peft's
``adapter_names``, offline and streaming alike). A plugin is saved alone as one safetensors file
(LoRA tensors + its LoraConfig, scheme and emotion as metadata).

peft notes: it wraps ``nn.Conv1d`` (our ConvTranspose1d upsamplers are polyphase Conv1d for this
reason) but builds the LoRA "A" conv without the base conv's dilation; `_fix_dilation` gives it
the base dilation, which is the mathematically right low-rank update of a dilated conv (and what
peft's merge, B.A added to the base kernel, assumes). No weight norm anywhere (the Piper export
folded it), so nothing needs removing before LoRA.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from agent.tts import UnitTTS

POSITIONS = ("frontend", "upsampler", "decoder")
EMOTIONS = ("happy", "sad", "angry", "surprised")
NEUTRAL = "neutral"
BASE = "__base__"  # peft's name for "no adapter" in adapter_names


def parse_scheme(scheme: str) -> tuple[str, ...]:
    """'frontend+decoder' -> ('frontend', 'decoder'); 'all' -> every position."""
    if scheme == "all":
        return POSITIONS
    parts = tuple(p.strip() for p in scheme.split("+") if p.strip())
    bad = [p for p in parts if p not in POSITIONS]
    if not parts or bad:
        raise ValueError(f"unknown LoRA position(s) {bad or scheme!r}; use '+'-joined names of {', '.join(POSITIONS)} or 'all'")
    return tuple(p for p in POSITIONS if p in parts)


def lora_targets(model: UnitTTS, scheme: str) -> list[str]:
    """Full names of the nn.Conv1d modules a scheme puts LoRA on."""
    positions = parse_scheme(scheme)
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv1d) and name.split(".")[0] in positions and ".lora_" not in name:
            # once peft wrapped a conv, the original sits at <name>.base_layer
            names.append(name.removesuffix(".base_layer"))
    return names


def lora_parameter_count(model: UnitTTS, scheme: str, rank: int) -> int:
    """Parameters of one plugin: r * (C_in * k + C_out) per targeted conv."""
    total = 0
    for name in lora_targets(model, scheme):
        conv = model.get_submodule(name)
        conv = getattr(conv, "base_layer", conv)
        total += rank * (conv.in_channels * conv.kernel_size[0] + conv.out_channels)
    return total


@dataclass
class PluginInfo:
    emotion: str
    scheme: str
    rank: int
    alpha: float
    parameters: int


def _fix_dilation(model: nn.Module, adapter: str) -> None:
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_A:
            base = module.get_base_layer()
            if isinstance(base, nn.Conv1d):
                module.lora_A[adapter].dilation = base.dilation


class EmotionTTS:
    """A `UnitTTS` with named LoRA emotion plugins. Call it like the UnitTTS (offline or streaming).

    ``emotions=`` on a call picks a plugin per row (``"neutral"`` for none); without it the
    emotion set by `set_emotion` applies to every row. (A plain object, not an nn.Module: the
    UnitTTS is the one module tree; peft's wrapper around it is kept beside it.)
    """

    def __init__(self, tts: UnitTTS) -> None:
        self.tts = tts
        self.peft: nn.Module | None = None
        self.plugins: dict[str, PluginInfo] = {}
        self.emotion = NEUTRAL
        self._layers: list[nn.Module] = []

    # ------------------------------------------------------------------ plugins
    def _config(self, scheme: str, rank: int, alpha: float | None):
        from peft import LoraConfig

        names = lora_targets(self.tts, scheme)
        pattern = "^(" + "|".join(n.replace(".", r"\.") for n in names) + ")$"
        return LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, target_modules=pattern,
                          lora_dropout=0.0, bias="none", init_lora_weights=True)

    def add_plugin(self, emotion: str, scheme: str, rank: int, alpha: float | None = None) -> PluginInfo:
        """A fresh (identity: B = 0) LoRA adapter named ``emotion`` at the positions of ``scheme``."""
        from peft import get_peft_model

        if emotion == NEUTRAL or emotion == BASE:
            raise ValueError("neutral is the decoder without plugins; it cannot be a plugin")
        if emotion in self.plugins:
            raise ValueError(f"plugin {emotion!r} already loaded")
        config = self._config(scheme, rank, alpha)
        if self.peft is None:
            self.peft = get_peft_model(self.tts, config, adapter_name=emotion)
        else:
            self.peft.add_adapter(emotion, config)
        _fix_dilation(self.tts, emotion)
        from peft.tuners.tuners_utils import BaseTunerLayer

        self._layers = [m for m in self.tts.modules() if isinstance(m, BaseTunerLayer)]
        info = PluginInfo(emotion=emotion, scheme=scheme, rank=rank, alpha=float(config.lora_alpha),
                          parameters=lora_parameter_count(self.tts, scheme, rank))
        self.plugins[emotion] = info
        self.set_emotion(self.emotion if self.emotion in self.plugins else NEUTRAL)
        self.eval()  # peft may leave new layers in train mode; mixed batches need eval mode
        return info

    def eval(self) -> EmotionTTS:
        self.tts.eval()
        if self.peft is not None:
            self.peft.eval()
        return self

    def train(self, mode: bool = True) -> EmotionTTS:
        self.tts.train(mode)
        if self.peft is not None:
            self.peft.train(mode)
        return self

    def trainable(self, emotion: str) -> list[nn.Parameter]:
        """The LoRA parameters of one plugin, with requires_grad on (everything else frozen)."""
        for p in self.tts.parameters():
            p.requires_grad_(False)
        params = [p for n, p in self.tts.named_parameters() if ".lora_" in n and f".{emotion}." in n]
        for p in params:
            p.requires_grad_(True)
        return params

    def plugin_state_dict(self, emotion: str) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        assert self.peft is not None
        return {k: v.detach().contiguous().clone() for k, v in get_peft_model_state_dict(self.peft, adapter_name=emotion).items()}

    def save_plugin(self, emotion: str, path: str | Path, extra: dict | None = None) -> Path:
        """One safetensors file with the plugin's LoRA tensors and how to rebuild it (atomic)."""
        from safetensors.torch import save_file

        info = self.plugins[emotion]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"emotion": emotion, "scheme": info.scheme, "rank": str(info.rank), "alpha": str(info.alpha),
                "parameters": str(info.parameters), "extra": json.dumps(extra or {}, sort_keys=True)}
        tmp = path.with_suffix(path.suffix + ".tmp")
        save_file(self.plugin_state_dict(emotion), str(tmp), metadata=meta)
        tmp.replace(path)
        return path

    def load_plugin(self, path: str | Path, emotion: str | None = None) -> PluginInfo:
        """Add the plugin stored at ``path`` (under its own emotion name unless ``emotion``)."""
        from peft import set_peft_model_state_dict
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"emotion plugin not found: {path}")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if "scheme" not in meta:
            raise ValueError(f"{path}: not an emotion plugin (no scheme metadata)")
        name = emotion or meta["emotion"]
        info = self.add_plugin(name, meta["scheme"], int(meta["rank"]), float(meta["alpha"]))
        result = set_peft_model_state_dict(self.peft, load_file(str(path)), adapter_name=name)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise ValueError(f"{path}: plugin does not fit this decoder (unexpected {unexpected[:3]})")
        self.eval()
        return info

    # ------------------------------------------------------------------ selection
    def set_emotion(self, emotion: str | None) -> float:
        """Select the emotion of the next utterances (None / 'neutral': no plugin). Returns seconds taken."""
        t0 = time.perf_counter()
        emotion = emotion or NEUTRAL
        if emotion != NEUTRAL and emotion not in self.plugins:
            raise KeyError(f"no emotion plugin {emotion!r}; loaded: {', '.join(self.plugins) or 'none'}")
        # Per LoRA layer, not peft's model-wide set_adapter (which walks every module of the
        # model and toggles requires_grad): the same two layer calls, ~10x cheaper.
        for layer in self._layers:
            if emotion == NEUTRAL:
                layer._disable_adapters = True
            else:
                layer.set_adapter(emotion, inference_mode=True)
                layer._disable_adapters = False
        if self.peft is not None and emotion != NEUTRAL:
            self.peft.base_model.active_adapter = emotion  # what peft's own set_adapter records
        self.emotion = emotion
        return time.perf_counter() - t0

    @contextmanager
    def _rows(self, emotions: Sequence[str] | None):
        """Adapter names per row for peft (enabling adapters for the call when some row needs one)."""
        if emotions is None or self.peft is None:
            yield None
            return
        names = []
        for e in emotions:
            if e != NEUTRAL and e not in self.plugins:
                raise KeyError(f"no emotion plugin {e!r}; loaded: {', '.join(self.plugins) or 'none'}")
            names.append(BASE if e == NEUTRAL else e)
        was = self.emotion
        if was == NEUTRAL:
            for layer in self._layers:
                layer._disable_adapters = False
        try:
            yield names
        finally:
            if was == NEUTRAL:
                for layer in self._layers:
                    layer._disable_adapters = True

    def __call__(self, units: torch.Tensor | None, *args, emotions: Sequence[str] | None = None, **kwargs):
        with self._rows(emotions) as names:
            if names is None or self.peft is None:
                return self.tts(units, *args, **kwargs)
            return self.peft(units, *args, adapter_names=names, **kwargs)

    def streaming(self, batch_size: int):
        return self.tts.streaming(batch_size)

    def reset_streaming(self, mask: torch.Tensor | None = None) -> None:
        self.tts.reset_streaming(mask)


# ---------------------------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------------------------
def weights_path(spec: str, role: str = "tts") -> Path:
    """A card name, card YAML or .safetensors path -> the weights file (AssetError if missing)."""
    from agent.assets import load_card, source_path

    if spec.endswith(".safetensors"):
        path = Path(spec).expanduser()
        if not path.is_file():
            from agent.assets import AssetError

            raise AssetError(f"weights file {path} not found")
        return path
    return source_path(load_card(spec, family="unit-tts", role=role))


def load_emotion_tts(cfg, emotions: Sequence[str] | None = None) -> tuple[EmotionTTS, str]:
    """The trained unit decoder (Piper decoder from the prepared voice) with its emotion plugins.

    Returns the model (eval, neutral selected) and the identity of the units it was trained on.
    ``emotions`` limits the plugins loaded (default: every plugin of ``cfg.tts.plugins``).
    """
    from agent.piper_torch import load_vits
    from agent.tts import build_tts, load_tts_weights, read_tts_meta

    tc = cfg.tts
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    path = weights_path(tc.card)
    meta = read_tts_meta(path)
    vits, _ = load_vits(cfg.voice)
    tts = load_tts_weights(build_tts(meta.config, vits.dec), path).eval()
    tts.requires_grad_(False)
    model = EmotionTTS(tts)
    for emotion in emotions if emotions is not None else list(tc.plugins):
        if emotion == NEUTRAL:
            continue
        if emotion not in tc.plugins:
            raise KeyError(f"no plugin configured for emotion {emotion!r}; configured: {', '.join(tc.plugins)}")
        model.load_plugin(weights_path(tc.plugins[emotion], role="tts-emotion"), emotion)
    model.set_emotion(tc.emotion if tc.emotion in model.plugins else NEUTRAL)
    return model, meta.units
