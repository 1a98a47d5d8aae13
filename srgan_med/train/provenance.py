"""What a checkpoint and an exported model say about how they were made (the model card's facts)."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch


def versions() -> dict[str, str]:
    import monai

    import srgan_med

    return {
        "srgan_med": srgan_med.__version__,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def provenance(trainer) -> dict:
    """Data, degradation, VGG source, device and versions of a run (JSON-able)."""
    from srgan_med.schema import to_dict

    perceptual = trainer.perceptual
    return {
        "data": {
            "train": [str(p) for p in trainer.train_paths],
            "train_fingerprints": trainer.train_fingerprints,
            "validation": [str(p) for p in trainer.validation_paths],
            "patch_size": trainer.config.data.patch_size,
            "batch_size": trainer.config.data.batch_size,
        },
        "degradation": to_dict(trainer.degradation),
        "perceptual_weights": perceptual.weight_source if perceptual is not None else None,
        "device": device_name(trainer.device),
        "bf16": trainer.autocast,
        "versions": versions(),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def model_path(config, phase: str) -> Path:
    """Where a phase's model goes: ``<output_dir>/models/<name>-srresnet.safetensors`` (or ``-srgan``)."""
    suffix = {"pretrain": "srresnet", "gan": "srgan"}[phase]
    return config.output_path / "models" / f"{config.name}-{suffix}.safetensors"


def export_model(trainer) -> Path:
    """Write the current generator as a model bundle with its card; returns the path."""
    from srgan_med.models.bundle import save_bundle

    config = trainer.config
    path = model_path(config, trainer.phase)
    path.parent.mkdir(parents=True, exist_ok=True)
    facts = provenance(trainer)
    losses = config.losses
    card = {
        "name": path.stem,
        "phase": "SRResNet (fidelity, pixel loss)"
        if trainer.phase == "pretrain"
        else "SRGAN (content + adversarial)",
        "training_data": [Path(p).name for p in trainer.train_paths],
        "validation_data": [Path(p).name for p in trainer.validation_paths],
        "degradation": facts["degradation"],
        "losses": {
            "pretrain": f"{losses.pixel} pixel loss",
            "gan": (
                f"VGG19 {dict(losses.perceptual.layer_weights)} x {losses.perceptual.weight} + "
                f"adversarial x {losses.adversarial_weight} + pixel x {losses.pixel_weight_gan}"
            ),
        },
        "vgg_weights": facts["perceptual_weights"],
        "steps": {
            "pretrain": config.pretrain.steps,
            "gan": config.gan.steps if trainer.phase == "gan" else 0,
        },
        "patch_size": config.data.patch_size,
        "batch_size": config.data.batch_size * trainer.dist.world_size,
        "trained_on": facts["device"],
        "trained_at": facts["saved_at"],
        "versions": facts["versions"],
        "validation": trainer.metrics,
    }
    return save_bundle(
        path,
        trainer.generator,
        architecture=trainer.architecture,
        scale=config.scale,
        modality=config.modality,
        normalisation=trainer.degradation.normalise,
        card=card,
        overwrite=True,
    )


def sidecar(trainer, parts: dict) -> dict:
    """The JSON sidecar of a checkpoint: position, config, metrics, optimiser parts and provenance."""
    return {
        "phase": trainer.phase,
        "step": trainer.step,
        "global_step": trainer.global_step,
        "config": trainer.config.to_dict(),
        "metrics": trainer.metrics,
        "world_size": trainer.dist.world_size,
        **parts,
        **provenance(trainer),
    }
