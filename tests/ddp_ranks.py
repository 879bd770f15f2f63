"""Run by tests/test_distributed.py under torchrun: a few in-memory training steps of the library's
Trainer in each process, then each rank's weights and EMA to OUT/rank{r}.safetensors."""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from diffkit.core import distributed, make_schedule
from diffkit.core.trainer import TrainSettings, Trainer
from diffkit.points.model import PointsConfig, PointsDenoiser

world = distributed.join()
torch.manual_seed(0)
model = PointsDenoiser(PointsConfig(dim=2, hidden=32, out=2))
trainer = Trainer(model, make_schedule("cosine", 100), TrainSettings(steps=5, warmup=1), prediction="eps",
                  variance="fixed_small", world=world)
data = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
trainer.fit(lambda step, micro: (data[world.rank::world.size] * (1 + step), {}))
weights = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
weights |= {f"ema.{k}": v.contiguous() for k, v in trainer.ema.state_dict().items()}
save_file(weights, Path(sys.argv[1]) / f"rank{world.rank}.safetensors")
