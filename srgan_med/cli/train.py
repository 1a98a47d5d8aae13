"""``srgan-med train CONFIG``: SRResNet pre-training, then SRGAN fine-tuning (see configs/ct.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from srgan_med.cli._common import fail, handle_errors


@handle_errors
def train(
    config: Annotated[Path, typer.Argument(help="Training config (YAML), e.g. configs/ct.yaml.")],
    resume: Annotated[
        bool | None,
        typer.Option(
            "--resume/--no-resume",
            help="Continue from the newest checkpoint in output_dir (default: when one exists). "
            "--no-resume refuses a folder that holds checkpoints.",
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override a config value: KEY=VALUE with a dotted key, e.g. gan.steps=1000."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train an SRResNet (phase 1, pixel loss) and an SRGAN (phase 2, VGG19 content + adversarial loss).

    Checkpoints, TensorBoard logs (`tensorboard --logdir OUTPUT_DIR/tensorboard`) and exported models
    go to the config's output_dir. Multi-GPU: `torchrun --nproc_per_node N -m srgan_med train CONFIG`.
    """
    from srgan_med.train import Trainer, load_train_config

    settings = load_train_config(config, overrides or [])
    trainer = Trainer(settings, resume=resume, quiet=quiet)
    try:
        result = trainer.run()
    except KeyboardInterrupt:
        from srgan_med.train.checkpoint import list_checkpoints

        if list_checkpoints(trainer.checkpoint_dir):
            said = f"run the same command again to resume from the last checkpoint in {settings.output_dir}"
        else:
            said = "no checkpoint was written yet: the same command starts the run again"
        raise fail(f"interrupted; {said}", 130) from None
    if trainer.dist.is_main:
        for phase, path in result.models.items():
            typer.echo(f"{phase}: {path}")
        if result.metrics:
            m = result.metrics
            typer.echo(
                f"validation: PSNR {m['psnr']:.2f} dB (bicubic {m['psnr_bicubic']:.2f}), "
                f"SSIM {m['ssim']:.4f} (bicubic {m['ssim_bicubic']:.4f})"
            )
