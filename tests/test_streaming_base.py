from dataclasses import dataclass

import pytest
import torch

from agent.streaming import StreamingModule, StreamingState, lazy_zeros


@dataclass
class _CounterState(StreamingState):
    count: torch.Tensor

    def reset(self, mask: torch.Tensor) -> None:
        self.count[mask] = 0


class _Counter(StreamingModule[_CounterState]):
    """Adds how many steps each row has seen so far to its input."""

    def _init_streaming_state(self, batch_size: int) -> _CounterState:
        return _CounterState(batch_size=batch_size, count=torch.zeros(batch_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        st = self.streaming_state
        st.count += 1
        return x + st.count


class _Pair(StreamingModule[_CounterState]):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = _Counter(), _Counter()

    def _init_streaming_state(self, batch_size: int) -> _CounterState:
        return _CounterState(batch_size=batch_size, count=torch.zeros(batch_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def test_state_exists_only_inside_context():
    m = _Pair()
    with pytest.raises(RuntimeError, match="not streaming"):
        m(torch.zeros(2))
    with m.streaming(2):
        assert m.a.is_streaming and m.b.is_streaming
        assert torch.equal(m(torch.zeros(2)), torch.full((2,), 2.0))
        with pytest.raises(RuntimeError, match="already streaming"):
            with m.streaming(2):
                pass
    assert not m.a.is_streaming and not m.b.is_streaming


def test_reset_is_per_row():
    m = _Pair()
    with m.streaming(3):
        m(torch.zeros(3))
        m(torch.zeros(3))
        m.reset_streaming(torch.tensor([False, True, False]))
        out = m(torch.zeros(3))
    # rows 0 and 2 are at step 3 in both counters; row 1 restarted at step 1.
    assert out.tolist() == [6.0, 2.0, 6.0]


def test_states_can_be_parked_and_swapped():
    m = _Counter()
    s1, s2 = m.new_streaming_state(1), m.new_streaming_state(1)
    m.set_streaming_state(s1)
    m(torch.zeros(1))
    m(torch.zeros(1))
    m.set_streaming_state(s2)
    assert m(torch.zeros(1)).item() == 1.0  # session 2 unaffected by session 1
    m.set_streaming_state(s1)
    assert m(torch.zeros(1)).item() == 3.0
    m.set_streaming_state(None)
    assert not m.is_streaming


def test_state_swaps_use_the_tree_as_of_the_last_new_state():
    """The walk over streaming descendants is cached for state swaps (the runtime swaps sessions on
    every job); ``new_streaming_state`` and ``streaming`` walk again, so a changed tree is seen."""
    m = _Pair()
    s1 = m.new_streaming_state(1)
    assert set(s1) == {"", "a", "b"}
    m.b = torch.nn.Sequential(_Counter())  # the tree changes: "b" is now "b.0"
    s2 = m.new_streaming_state(1)
    assert set(s2) == {"", "a", "b.0"}
    m.set_streaming_state(s2)
    assert torch.equal(m(torch.zeros(1)), torch.full((1,), 2.0))
    assert m.get_streaming_state()["b.0"] is s2["b.0"]
    m.set_streaming_state(None)
    with pytest.raises(KeyError, match="b.0"):
        m.set_streaming_state(s1)  # states made for the old tree do not fit the new one
    m.set_streaming_state(None)
    m.c = _Counter()
    with m.streaming(1):  # entering streaming walks again
        assert m.c.is_streaming


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.long])
@pytest.mark.parametrize("shape", [(3, 4), (4, 1, 3, 512, 64)])
def test_lazy_zeros_is_a_zero_tensor_of_its_own(shape, dtype):
    """Small (torch.zeros) and large (calloc'd pages) alike: zero, the asked dtype and shape,
    contiguous, 64-byte aligned when large, writable, and two of them never share memory."""
    a, b = lazy_zeros(shape, dtype), lazy_zeros(shape, dtype)
    assert a.dtype == dtype and tuple(a.shape) == shape and a.is_contiguous()
    assert torch.equal(a, torch.zeros(shape, dtype=dtype))
    if a.numel() * a.element_size() >= 1 << 20:
        assert a.data_ptr() % 64 == 0
    a.view(-1)[-1] = 7
    a.view(-1)[0] = 5
    assert int(a.sum()) == 12 and int(b.abs().sum()) == 0
