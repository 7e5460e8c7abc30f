"""Optional fused kernels (flash-linear-attention on CUDA) agree with the
pure-PyTorch reference; skipped where no GPU or no ``fla`` is present."""
import pytest
import torch

from search_spaces.slm import kernels
from search_spaces.slm.layers import l2_normalize
from search_spaces.slm.recurrence import chunked_scan


def test_cpu_tensors_use_the_reference():
    x = torch.zeros(1, 1, 4, 2)
    assert kernels.fused_scan(x, x, x, torch.zeros(1, 1, 4), None, None, 4) is None


@pytest.mark.gpu
@pytest.mark.parametrize("delta", [False, True])
def test_fused_kernels_match_reference(delta):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if not kernels.available():
        pytest.skip("flash-linear-attention (fla) is not installed")
    gen = torch.Generator().manual_seed(0)
    b, h, t, dk, dv = 2, 4, 100, 32, 32
    q = torch.randn(b, h, t, dk, generator=gen) * dk ** -0.5
    k = l2_normalize(torch.randn(b, h, t, dk, generator=gen))
    v = torch.randn(b, h, t, dv, generator=gen)
    g = -torch.rand(b, h, t, generator=gen) * 0.1
    beta = torch.rand(b, h, t, generator=gen) if delta else None
    ref, ref_state = chunked_scan(q, k, v, g, beta, None, 32)
    cuda = [x.cuda() if x is not None else None for x in (q, k, v, g, beta)]
    out, state = kernels.fused_scan(*cuda, None, 64)
    assert (out.cpu() - ref).abs().max().item() <= 1e-3
    assert (state.cpu() - ref_state).abs().max().item() <= 1e-3
