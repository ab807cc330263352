"""The agent's models (plain PyTorch, no asyncio). The public entry points are re-exported lazily,
so ``import agent`` loads nothing heavy::

    from agent import load_duplex_model, DuplexModel
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "DuplexModel": "agent.duplex_model",
    "DuplexState": "agent.duplex_model",
    "StepResult": "agent.duplex_model",
    "load_duplex_model": "agent.duplex_model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'agent' has no attribute {name!r}")
