"""One streaming base class for every stateful model part.

A ``StreamingModule[State]`` keeps its per-session state in a small typed dataclass that exists
only inside ``with module.streaming(batch_size):``. All streaming descendants get their state
together and lose it together on exit, so no cache is ever reset by hand. Resets are per batch
row (``reset_streaming(mask)``): one session's barge-in never clears another's state.

States are also detachable (``get_streaming_state`` / ``set_streaming_state``) so that one model
instance can serve several sessions from a single worker thread, swapping states between calls.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import torch
from torch import nn

_LAZY_MIN_BYTES = 1 << 20
_ALIGN = 64


def lazy_zeros(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``torch.zeros(shape, dtype=dtype)`` whose memory the OS zero-fills page by page on first touch.

    Why: a session's KV caches are preallocated for the longest context (~200 MB for the default
    agent) but a session writes a few MB of them; ``torch.zeros`` writes every byte at once (~75 ms
    per new session, 0.2-0.7 s under load, on the worker thread that listens to every other session).
    numpy's ``zeros`` takes large blocks from ``calloc``, which maps fresh, already-zero pages
    instead. Small tensors come from ``torch.zeros`` (nothing to save). The result is 64-byte aligned
    and owns its memory like any tensor (the numpy buffer lives as long as it does)."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < _LAZY_MIN_BYTES:
        return torch.zeros(shape, dtype=dtype)
    buf = np.zeros(nbytes + _ALIGN, dtype=np.uint8)
    off = -buf.ctypes.data % _ALIGN
    return torch.from_numpy(buf[off : off + nbytes]).view(dtype).view(shape)


@dataclass
class StreamingState(abc.ABC):
    """Per-session state of one streaming module. Buffers are preallocated at creation."""

    batch_size: int

    @abc.abstractmethod
    def reset(self, mask: torch.Tensor) -> None:
        """Reset the rows where ``mask`` (B,) is True to their initial values, in place."""


State = TypeVar("State", bound=StreamingState)

# name -> state of every streaming module in a tree (keys are module paths, "" for the root).
StateDict = dict[str, StreamingState]


class StreamingModule(nn.Module, Generic[State]):
    """Base class of stateful streaming layers. Subclasses implement ``_init_streaming_state``."""

    def __init__(self) -> None:
        super().__init__()
        self._streaming_state: State | None = None
        self._children_cache: list[tuple[str, StreamingModule]] | None = None

    @abc.abstractmethod
    def _init_streaming_state(self, batch_size: int) -> State:
        """Create this module's state for ``batch_size`` rows (preallocate everything here)."""

    @property
    def is_streaming(self) -> bool:
        return self._streaming_state is not None

    @property
    def streaming_state(self) -> State:
        if self._streaming_state is None:
            raise RuntimeError(f"{type(self).__name__} is not streaming; use `with module.streaming(batch_size):`")
        return self._streaming_state

    def _streaming_children(self, refresh: bool = False) -> list[tuple[str, StreamingModule]]:
        """Every streaming module of the tree (self included), found by walking it. The walk is
        cached: with a frozen LLM inside, it visits thousands of modules, and the runtime swaps
        session states on every job (~3 ms per listening chunk). Entering ``streaming`` and making
        ``new_streaming_state`` walk again, so states are always made for the current tree."""
        if refresh or self._children_cache is None:
            self._children_cache = [(n, m) for n, m in self.named_modules() if isinstance(m, StreamingModule)]
        return self._children_cache

    @contextmanager
    def streaming(self, batch_size: int) -> Iterator[None]:
        """Give this module and every streaming descendant a fresh state for the block's duration."""
        if self.is_streaming:
            raise RuntimeError(f"{type(self).__name__} is already streaming")
        modules = self._streaming_children(refresh=True)
        try:
            for _, module in modules:
                module._streaming_state = module._init_streaming_state(batch_size)
            yield
        finally:
            for _, module in modules:
                module._streaming_state = None

    def reset_streaming(self, mask: torch.Tensor | None = None) -> None:
        """Reset the rows selected by ``mask`` (all rows when None) in every streaming descendant."""
        for _, module in self._streaming_children():
            state = module.streaming_state
            m = torch.ones(state.batch_size, dtype=torch.bool) if mask is None else mask.to(torch.bool).cpu()
            if m.shape != (state.batch_size,):
                raise ValueError(f"reset mask must have shape ({state.batch_size},), got {tuple(m.shape)}")
            state.reset(m)

    def get_streaming_state(self) -> StateDict:
        """Detach the current states (e.g. to park a session while another one runs)."""
        return {name: module.streaming_state for name, module in self._streaming_children()}

    def set_streaming_state(self, states: StateDict | None) -> None:
        """Install states taken with ``get_streaming_state`` (None clears them)."""
        for name, module in self._streaming_children():
            if states is None:
                module._streaming_state = None
            else:
                if name not in states:
                    raise KeyError(f"no streaming state for submodule {name!r}")
                module._streaming_state = states[name]  # type: ignore[assignment]

    def new_streaming_state(self, batch_size: int) -> StateDict:
        """Fresh states for every streaming descendant without installing them."""
        return {name: module._init_streaming_state(batch_size)
                for name, module in self._streaming_children(refresh=True)}
