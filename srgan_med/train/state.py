"""A trainer's full state as named tensors + JSON parts, and back (checkpoints, divergence guard).

Everything one training step depends on is here: weights and BatchNorm statistics of both networks,
optimiser and scheduler states, the global torch RNG, and each rank's patch-sampler and degradation
generators (the data position), gathered to rank 0 under DDP.
"""

from __future__ import annotations

import torch

from srgan_med.errors import InputError
from srgan_med.train import checkpoint as ckpt


def capture_state(trainer) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, parts)``: tensors for safetensors, JSON-able optimiser/scheduler parts."""
    tensors = {f"generator.{k}": v for k, v in trainer.generator.state_dict().items()}
    tensors.update({f"discriminator.{k}": v for k, v in trainer.discriminator.state_dict().items()})
    optimisers = {}
    for name, optimiser in trainer.optimisers.items():
        flat, part = ckpt.optimiser_to_flat(f"optim.{name}", optimiser)
        tensors.update(flat)
        optimisers[name] = part
    tensors["rng.torch"] = torch.get_rng_state()
    if trainer.device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(trainer.device)
    for rank, state in enumerate(trainer.dist.all_gather(trainer.sampler.get_state())):
        tensors[f"rng.sampler.rank{rank}"] = state
    for rank, state in enumerate(trainer.dist.all_gather(trainer.degrade_generator.get_state())):
        tensors[f"rng.degrade.rank{rank}"] = state
    schedulers = {name: ckpt.scheduler_to_json(s) for name, s in trainer.schedulers.items()}
    return tensors, {"optimisers": optimisers, "schedulers": schedulers}


def restore_state(trainer, tensors: dict[str, torch.Tensor], parts: dict, data_position: bool = True) -> None:
    """Load what :func:`capture_state` captured; ``data_position=False`` leaves the data stream alone."""
    try:
        trainer.generator.load_state_dict(ckpt.prefixed(tensors, "generator"))
        trainer.discriminator.load_state_dict(ckpt.prefixed(tensors, "discriminator"))
    except RuntimeError as error:
        raise InputError(
            f"checkpoint does not fit this config's networks ({str(error).splitlines()[0]})"
        ) from None
    for name, optimiser in trainer.optimisers.items():
        optimiser.load_state_dict(
            ckpt.optimiser_from_flat(f"optim.{name}", tensors, parts["optimisers"][name])
        )
    for name, scheduler in trainer.schedulers.items():
        scheduler.load_state_dict(ckpt.scheduler_from_json(parts["schedulers"][name]))
    if not data_position:
        return
    torch.set_rng_state(tensors["rng.torch"])
    if trainer.device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], trainer.device)
    key = f"rank{trainer.dist.rank}"
    if f"rng.sampler.{key}" not in tensors:
        raise InputError(
            "checkpoint was written by fewer processes; resume with the same number of processes"
        )
    trainer.sampler.set_state(tensors[f"rng.sampler.{key}"])
    trainer.degrade_generator.set_state(tensors[f"rng.degrade.{key}"])
