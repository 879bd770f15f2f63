"""What a model costs: parameters, FLOPs (torch's FLOP counter), memory and time, measured before any
training (`train --dry-run`) or for a trained run (`diffkit info RUN`).

FLOPs count the matrix products and convolutions torch dispatches (what FlopCounterMode knows: linear,
conv, attention, their backward), two per multiply-add. Training memory is the AdamW state, exact (five
float32 copies of the weights: weights, gradients, two moments, EMA), plus the activations autograd
keeps for the backward pass, measured by their storage as they are saved; on CUDA the allocator's peak
over the timed steps is reported beside it.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

SAMPLE_CALLS = 20  # model calls of one sample: 20 steps of the default samplers (heun takes about twice)
STATE_COPIES = 5


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def state_bytes(model: nn.Module) -> int:
    """The training state of AdamW with an EMA, in float32: weights, gradients, two moments, EMA."""
    return STATE_COPIES * 4 * parameters(model)


def call_flops(model: nn.Module, *args, **kwargs) -> int:
    """FLOPs of one forward call, without gradients."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*args, **kwargs)
    return counter.get_total_flops()


def _first_of_batch(value):
    return value[:1] if isinstance(value, Tensor) and value.dim() > 0 else value


class _FirstCall:
    """Keeps the inputs of a module's first forward call in a step, cut to one example."""

    def __init__(self, module: nn.Module):
        self.args, self.kwargs = None, None
        self.handle = module.register_forward_pre_hook(self._keep, with_kwargs=True)

    def _keep(self, module, args, kwargs):
        if self.args is None:
            self.args = tuple(_first_of_batch(a).detach() for a in args)
            self.kwargs = {k: _first_of_batch(v) for k, v in kwargs.items()}


class _SavedActivations:
    """Bytes of the tensors autograd saves for backward (parameters excepted: they are the state)."""

    def __init__(self, model: nn.Module):
        self.weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.storages: dict[int, int] = {}
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)

    def _pack(self, tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.weights:
            self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    @property
    def total(self) -> int:
        return sum(self.storages.values())


def training_cost(trainer, batch_at: Callable, timed: int = 3) -> dict:
    """Costs of the trainer's step on its real batches: one counted step (FLOPs, activations), then
    `timed` steps timed on this device. It trains the in-memory model; nothing is written."""
    network = trainer.model
    first = _FirstCall(network)
    saved = _SavedActivations(network)
    network.train()
    try:
        with FlopCounterMode(display=False) as counter, saved.hooks:
            trainer.train_step(batch_at)
    finally:
        first.handle.remove()
    cuda = trainer.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(trainer.device)
        torch.cuda.reset_peak_memory_stats(trainer.device)
    seconds = []
    for _ in range(timed):
        start = time.perf_counter()
        trainer.train_step(batch_at)
        if cuda:
            torch.cuda.synchronize(trainer.device)
        seconds.append(time.perf_counter() - start)
    network.eval()
    per_call = call_flops(network, *first.args, **first.kwargs)
    result = {"parameters": parameters(network), "flops_per_step": counter.get_total_flops(),
              "flops_per_call": per_call, "flops_per_sample": per_call * SAMPLE_CALLS,
              "state_mib": state_bytes(network) / 2**20, "activations_mib": saved.total / 2**20,
              "seconds_per_step": statistics.median(seconds)}
    if cuda:
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated(trainer.device) / 2**20
    return result


def readable(value: float, unit: str = "") -> str:
    """1.23e9 -> '1.23 G' (+ unit): the sizes a person reads at a glance."""
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def print_cost(cost: dict, as_json: bool) -> None:
    """A cost report as JSON or as aligned lines a person reads."""
    if as_json:
        from diffkit.io import json_line

        json_line(cost)
        return
    shown = {"parameters": f"{cost['parameters']:,}",
             "FLOPs per step": readable(cost["flops_per_step"], "FLOP"),
             "FLOPs per call": readable(cost["flops_per_call"], "FLOP") + " (one example)",
             "FLOPs per sample": readable(cost["flops_per_sample"], "FLOP") + " (20 calls)",
             "training memory": f"{cost['state_mib'] + cost['activations_mib']:,.1f} MiB (AdamW state "
                                f"{cost['state_mib']:,.1f}, activations {cost['activations_mib']:,.1f})"}
    if "cuda_peak_mib" in cost:
        shown["CUDA peak"] = f"{cost['cuda_peak_mib']:,.1f} MiB"
    shown["seconds per step"] = (f"{cost['seconds_per_step']:.3g} ({cost['steps']:,} steps: "
                                 f"{cost['projected_minutes']:.1f} min)")
    for key, value in shown.items():
        print(f"{key:>17}  {value}")
