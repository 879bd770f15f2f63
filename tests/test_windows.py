import pytest
import torch

from diffkit.windows import overlap_process, window_starts


def test_windows_cover_the_input_half_overlapping_and_flush_with_the_end():
    assert window_starts(256, 256) == [0]
    assert window_starts(300, 256) == [0, 44]
    assert window_starts(1000, 256) == [0, 128, 256, 384, 512, 640, 744]


@pytest.mark.parametrize("size,window", [((100,), (256,)), ((256,), (256,)), ((1234,), (256,)),
                                         ((40, 52), (32, 32)), ((32, 96), (32, 32))])
def test_overlap_process_of_the_identity_returns_the_input(size, window):
    x = torch.randn(2, *size)
    assert torch.allclose(overlap_process(x, window, lambda w: w, batch=3), x, atol=1e-5)


def test_overlap_process_scales_windows_and_channels():
    # Each window up-sampled 4x by repetition and turned from 1 channel into 3: the whole comes out alike.
    small = torch.randn(1, 20, 12)
    grow = lambda w: w.repeat_interleave(4, -1).repeat_interleave(4, -2).expand(-1, 3, -1, -1)
    out = overlap_process(small, (8, 8), grow, scale=4)
    assert out.shape == (3, 80, 48)
    assert torch.allclose(out, small.repeat_interleave(4, -1).repeat_interleave(4, -2).expand(3, -1, -1), atol=1e-5)
