"""Model assets by name: cards, the prepared-weights cache, converters."""

from agent.assets.cards import AssetError, ModelCard, list_cards, load_card, sha256_file, source_path
from agent.assets.store import cache_root, check_source, prepare, prepared_dir, verify

__all__ = [
    "AssetError",
    "ModelCard",
    "cache_root",
    "check_source",
    "list_cards",
    "load_card",
    "prepare",
    "prepared_dir",
    "sha256_file",
    "source_path",
    "verify",
]
