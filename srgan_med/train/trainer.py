"""SRGAN training: phase 1 SRResNet on the pixel loss, phase 2 SRGAN fine-tuning (Ledig et al. 2017).

The phase-2 step follows BasicSR's ``SRGANModel.optimize_parameters``: freeze the discriminator, sum
content (VGG19), adversarial and optional pixel losses for the generator and step it; unfreeze the
discriminator and step it on real and fake patches. HR patches are sampled from cached volumes and
degraded on the training device (:class:`srgan_med.degrade.BatchDegradation`).

Everything a step depends on (weights, optimiser and scheduler states, patch-sampler and degradation
generators) is checkpointed, so a resumed run continues the exact same sequence: on CPU with
``performance.deterministic`` it ends bit-for-bit where an uninterrupted run ends.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from srgan_med.errors import ConfigError, InputError, OutputExistsError
from srgan_med.train import checkpoint as ckpt
from srgan_med.train.config import PhaseConfig, TrainConfig
from srgan_med.train.distributed import Distributed, setup_distributed
from srgan_med.train.guard import DivergenceGuard
from srgan_med.train.provenance import model_path, sidecar
from srgan_med.train.reporting import Reporter
from srgan_med.train.state import capture_state, restore_state

PHASES = ("pretrain", "gan")
EXPORT_SUFFIX = {"pretrain": "srresnet", "gan": "srgan"}


@dataclass
class TrainResult:
    """What a finished run produced."""

    output_dir: Path
    models: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int | None = None


def _flag(value: bool | str, device: torch.device) -> bool:
    return device.type == "cuda" if value == "auto" else bool(value)


# What a resumed run may change: where and how fast it runs, what it validates, logs and keeps,
# and how long it goes on (the pre-training's length only while it is still pre-training: after
# that, the GAN steps are numbered from it). Anything else (data, degradation, losses, learning
# rates, seed) would make the rest of the run another experiment than the one its checkpoints,
# logs and exported models record: refused, with the keys named.
_RESUMABLE_CHANGES = (
    "output_dir", "base_dir", "name", "gan.steps", "data.validation", "data.validation_slices", "data.cache",
    "data.cache_dir", "validation", "logging", "checkpoint", "performance",
)  # fmt: skip


def _may_change_on_resume(key: str, phase: str | None) -> bool:
    if key == "pretrain.steps":
        return phase == "pretrain"
    return any(key == allowed or key.startswith(f"{allowed}.") for allowed in _RESUMABLE_CHANGES)


def _degradation_model(config: TrainConfig):
    """The config's degradation model: a preset by name, or a YAML file relative to the config."""
    from srgan_med.degrade import load_degradation_preset
    from srgan_med.degrade.config import PRESET_NAMES

    name = config.degradation
    return load_degradation_preset(name if name.lower() in PRESET_NAMES else config.resolve(name))


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters for a one-line error."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay whole values)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        # layer_weights maps VGG layers to weights: kept whole, so a layer added or dropped differs
        # (flattened, a key only one side has is not compared).
        if isinstance(value, dict) and value and key != "layer_weights":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class Trainer:
    """One training run of ``config``.

    Args:
        config: the validated :class:`TrainConfig`.
        resume: ``None`` resumes when the output folder holds checkpoints; ``True`` requires one;
            ``False`` refuses to touch a folder that holds checkpoints.
        quiet: no progress bar.
    """

    def __init__(self, config: TrainConfig, resume: bool | None = None, quiet: bool = False) -> None:
        self.config = config
        self.output_dir = config.output_path
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self._check_output_dir()
        self._inputs: dict[str, Any] | None = None  # see _resolved_inputs
        self.resume_from = self._find_resume(resume)
        self.dist: Distributed = setup_distributed(config.performance.device)
        self.device = self.dist.device
        perf = config.performance
        self.autocast = _flag(perf.bf16, self.device)
        self.channels_last = _flag(perf.channels_last, self.device)
        self._was_deterministic = torch.are_deterministic_algorithms_enabled()
        self._threads = torch.get_num_threads()
        if perf.cpu_threads:
            torch.set_num_threads(perf.cpu_threads)
        if perf.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.quiet = quiet
        self.perceptual = None
        if config.gan.steps > 0 and config.vgg_weights != "random":
            # VGG19 from a file, built first: a missing or unusable file stops the run before the
            # data loads, and the file is read once (a check of it here read all 548 MB again)
            self.perceptual = self._perceptual_loss()
        self._build_data_on_every_rank()
        self._build_models()
        self.phase = PHASES[0]
        self.step = 0
        self.optimisers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.MultiStepLR] = {}
        self.metrics: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.reporter: Reporter | None = None
        self.step_learning_rate = 0.0  # the generator's rate at the last step (what is logged)
        self._pending_log: tuple[dict[str, torch.Tensor], int] = ({}, 0)
        self.guard = DivergenceGuard(self)  # reads the losses only at the steps of ``_check_due``

    # ----------------------------------------------------------------------------------- set-up
    def _check_output_dir(self) -> None:
        """An output_dir that cannot become a folder stops the run before minutes of data loading,
        without creating anything (a refused run leaves no folder behind)."""
        existing_part = next(p for p in (self.output_dir, *self.output_dir.parents) if p.exists())
        if not existing_part.is_dir():
            raise ConfigError(f"output_dir: {existing_part} is a file, not a folder")
        if not os.access(existing_part, os.W_OK | os.X_OK):
            raise ConfigError(f"output_dir: {existing_part} is not writable")

    def _find_resume(self, resume: bool | None) -> Path | None:
        existing = ckpt.list_checkpoints(self.checkpoint_dir)
        if resume is False and existing:
            raise OutputExistsError(
                f"{self.output_dir} holds checkpoints of an earlier run; use --resume to continue it "
                "or set output_dir to another folder"
            )
        if resume is True and not existing:
            raise ConfigError(f"--resume: no checkpoint in {self.checkpoint_dir}")
        if existing:
            self._check_resumable(existing[-1])
        return existing[-1] if existing else None

    def _check_resumable(self, checkpoint: Path) -> None:
        """A checkpoint of other networks (scale, generator, discriminator) stops the run before the
        data is loaded, saying what differs (the weights would not load into this config's networks);
        so does one of the same networks with settings a resumed run may not change."""
        sidecar = ckpt.read_sidecar(checkpoint)
        written = sidecar.get("config", {})
        ours = json.loads(json.dumps(self.config.to_dict(), default=str))  # as the sidecar holds it
        differ = [
            key
            for key in ("scale", "generator", "discriminator")
            if key in written and written[key] != ours[key]
        ]
        if differ:
            then = ", ".join(f"{key} {written[key]}" for key in differ)
            now = ", ".join(f"{key} {ours[key]}" for key in differ)
            raise ConfigError(
                f"{self.output_dir} holds checkpoints of other networks ({then}; this config: {now}); "
                "set output_dir to another folder for a new run"
            )
        phase = sidecar.get("phase")
        done = int(sidecar.get("step", 0))
        if phase == "pretrain" and self.config.pretrain.steps < done:
            # The GAN steps are numbered from pretrain.steps: fewer than were done would number them
            # below the checkpoint, which then stays the newest, and every rerun trains the GAN again.
            raise ConfigError(
                f"pretrain.steps: {self.config.pretrain.steps} is fewer than the {done} steps "
                f"{checkpoint.name} has pre-trained; resume with at least {done}, or set output_dir "
                "to another folder for a new run"
            )
        flat_written, flat_ours = _flatten(written), _flatten(ours)
        changed = [
            key
            for key in flat_ours
            if key in flat_written
            and flat_written[key] != flat_ours[key]
            and not _may_change_on_resume(key, phase)
        ]
        # The same words may name other files or settings: relative paths read from another
        # base_dir, a degradation YAML edited since. Compared as resolved: the data by fingerprint
        # (the same files copied elsewhere resume, named as they are now), the degradation on the
        # settings both know.
        then_now: dict[str, tuple[Any, Any]] = {}
        resolved = self._resolved_inputs()
        written_data = sidecar.get("data", {})
        before = written_data.get("train_fingerprints")
        if before is None:  # a checkpoint of an older version: its resolved paths
            before, now, names = written_data.get("train"), resolved["paths"], resolved["paths"]
        else:
            now, names = resolved["fingerprints"], resolved["paths"]
            if "data.train" in changed:  # the words changed, the data may not have: theirs decides
                changed.remove("data.train")
        if before is not None and before != now:
            changed.append("data.train")
            if len(before) != len(now):
                then_now["data.train"] = (f"{len(before)} scan(s)", f"{len(now)} scan(s)")
            else:
                first = next(i for i, (a, b) in enumerate(zip(before, now, strict=True)) if a != b)
                written_names = written_data.get("train", [])
                then = written_names[first] if first < len(written_names) else before[first]
                then_now["data.train"] = (then, f"{names[first]} (other data)")
        then, now = sidecar.get("degradation"), resolved["degradation"]
        if isinstance(then, dict) and "degradation" not in changed:
            # settings a later version added (or dropped) are not a change of the experiment
            flat_then, flat_now = _flatten(then), _flatten(now)
            differing = [k for k in flat_now if k in flat_then and flat_then[k] != flat_now[k]]
            if differing:
                changed.append("degradation")
                then_now["degradation"] = (
                    {k: flat_then[k] for k in differing},
                    {k: flat_now[k] for k in differing},
                )
        if changed:

            def _said(key: str) -> str:
                then, now = then_now.get(key) or (flat_written[key], flat_ours[key])
                if key == "data.train" and key in then_now:  # paths whole: cut, they say nothing
                    return f"{key}: {then!r} -> {now!r}"
                return f"{key}: {_short(then)} -> {_short(now)}"  # resolved where then_now has it

            listed = "; ".join(_said(key) for key in changed[:4])
            more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
            raise ConfigError(
                f"{self.output_dir} holds checkpoints of a run with other settings ({listed}{more}); "
                "resume with the settings it started with, or set output_dir to another folder for a new run"
            )
        # DDP state (each rank's sampler and noise generator) is kept per rank: another number of
        # processes could not continue the same streams. Said before any data is loaded.
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if int(sidecar.get("world_size", 1)) != world_size:
            raise ConfigError(
                f"{checkpoint}: written by {sidecar.get('world_size')} process(es); resume with the same "
                f"number (now {world_size}), or set output_dir to another folder for a new run"
            )

    def _resolved_inputs(self) -> dict[str, Any]:
        """The training data files (paths and fingerprints) and the degradation model as this config
        resolves them, in the form the checkpoint sidecar keeps them; resolved once (the resume
        check and the data loading both need them, and fingerprints read the files)."""
        if self._inputs is None:
            from srgan_med.data import expand_data_list
            from srgan_med.data.lists import fingerprint
            from srgan_med.schema import to_dict

            config = self.config
            paths = expand_data_list(config.data.train, Path(config.base_dir), "data.train")
            model = _degradation_model(config)
            self._inputs = {
                "train_paths": paths,
                "paths": [str(p) for p in paths],
                "fingerprints": [fingerprint(p) for p in paths],
                "model": model,
                "degradation": json.loads(json.dumps(to_dict(model), default=str)),
            }
        return self._inputs

    def _build_data_on_every_rank(self) -> None:
        """:meth:`_build_data`; under DDP the ranks then agree that all of them loaded their data.

        Only rank 0 loads the validation scans: a bad one stopped rank 0 with its one-line error,
        and the other ranks, in DDP's first broadcast, ended in "internal error (... Connection
        closed by peer)". Now each says that another rank stopped."""
        failed: Exception | None = None
        try:
            self._build_data()
        except Exception as error:  # re-raised below, once every rank knows
            failed = error
        if self.dist.enabled:
            everyone = self.dist.all_true(torch.tensor(failed is None, device=self.dist.device))
            if failed is None and not everyone:
                self.dist.close()
                said = "stopped, another rank could not load its data (its error says why)"
                raise InputError(f"rank {self.dist.rank}: {said}")
        if failed is not None:
            raise failed

    def _build_data(self) -> None:
        from srgan_med.data import PatchSampler, expand_data_list, load_volumes, validation_set
        from srgan_med.degrade import BatchDegradation
        from srgan_med.degrade.normalise import magnitude_zero

        config = self.config
        inputs = self._resolved_inputs()
        self.degradation = inputs["model"]
        if not config.data.train:
            raise ConfigError("data.train: list at least one training scan")
        self.train_paths, self.train_fingerprints = inputs["train_paths"], inputs["fingerprints"]
        base = Path(config.base_dir)
        self.validation_paths = expand_data_list(config.data.validation, base, "data.validation")
        # data.cache_dir is read like the data's paths: relative to the config file
        cache_dir = self.output_dir / "cache"
        if config.data.cache_dir:
            cache_dir = config.resolve(config.data.cache_dir)
        load = dict(
            cache=config.data.cache, cache_dir=cache_dir, modality=config.modality, scale=config.scale
        )
        volumes = load_volumes(self.train_paths, self.degradation, **load)
        rank = self.dist.rank
        self.sampler = PatchSampler(
            volumes, config.data.patch_size, config.data.slice_axes, config.seed + 7919 * rank
        )
        # Each volume's no-signal value in its normalised units: k-space and Rician noise are taken about it
        self.magnitude_zeros = torch.tensor(
            [magnitude_zero(v.low, v.high, v.modality or self.degradation.modality) for v in volumes],
            dtype=torch.float64,
        )
        # On CUDA one noise draw per batch (B seeded draws would be B launches per step).
        self.degrader = BatchDegradation(
            self.degradation, config.scale, per_item_noise=self.device.type != "cuda"
        )
        self.degrade_generator = torch.Generator().manual_seed(config.seed + 104729 + 7919 * rank)
        self.validation_sets = []
        if self.dist.is_main:
            for volume in load_volumes(self.validation_paths, self.degradation, **load):
                self.validation_sets.append(
                    validation_set(
                        volume,
                        self.degradation,
                        config.scale,
                        config.data.validation_slices,
                        config.data.slice_axes[0],
                        seed=config.seed,
                    )
                )

    def _perceptual_loss(self):
        from srgan_med.losses import PerceptualLoss

        config, settings = self.config, self.config.losses.perceptual
        return PerceptualLoss(
            settings.layer_weights, config.vgg_weights, criterion=settings.criterion, seed=config.seed
        ).to(self.device)

    def _build_models(self) -> None:
        from srgan_med.nets import Discriminator, SRResNet

        config = self.config
        torch.manual_seed(config.seed)
        self.architecture = {
            "name": "srresnet",
            "kwargs": {
                "scale": config.scale,
                "blocks": config.generator.blocks,
                "width": config.generator.width,
                "channels": 1,
                "residual": config.generator.residual,
            },
        }
        self.generator = SRResNet(**self.architecture["kwargs"]).to(self.device)
        self.generator.output_conv = config.performance.output_conv
        self.discriminator = Discriminator(channels=1, width=config.discriminator.width).to(self.device)
        if config.gan.steps > 0 and self.perceptual is None:  # a random VGG19 (tests): nothing to read
            self.perceptual = self._perceptual_loss()
        memory = torch.channels_last if self.channels_last else torch.contiguous_format
        self.generator.to(memory_format=memory)
        self.discriminator.to(memory_format=memory)
        if self.perceptual is not None:
            self.perceptual.to(memory_format=memory)
        self.perceptual_run = self.perceptual
        self.generator_run: nn.Module = self.generator
        self.discriminator_run: nn.Module = self.discriminator
        discriminator_core: nn.Module = self.discriminator
        if self.config.performance.compile:
            mode = self.config.performance.compile_mode
            mode = None if mode == "default" else mode
            self.generator_run = torch.compile(self.generator, mode=mode)
            discriminator_core = self.discriminator_run = torch.compile(self.discriminator, mode=mode)
            if self.perceptual is not None:  # the VGG19 is half of a phase-2 step's FLOPs
                self.perceptual_run = torch.compile(self.perceptual, mode=mode)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.generator_run = DistributedDataParallel(self.generator_run, device_ids=ids)
            self.discriminator_run = DistributedDataParallel(self.discriminator_run, device_ids=ids)
        # The generator's step scores its output with the frozen discriminator; it bypasses DDP
        # (nothing of the discriminator is updated there, so nothing must be synchronised).
        self.discriminator_frozen = discriminator_core
        from srgan_med.losses import AdversarialLoss, pixel_loss

        self.pixel_loss = pixel_loss(config.losses.pixel)
        self.adversarial_loss = AdversarialLoss(config.losses.adversarial_weight)

    def _new_optimisers(self, phase: str) -> None:
        settings: PhaseConfig = getattr(self.config, phase)
        optimiser = self.config.optimiser
        betas = optimiser.betas
        learning_rate = settings.learning_rate * optimiser.lr_factor(
            self.config.data.batch_size, self.dist.world_size
        )
        fused = self.device.type == "cuda"
        modules = {"generator": self.generator}
        if phase == "gan":
            modules["discriminator"] = self.discriminator
        self.optimisers = {
            name: torch.optim.Adam(module.parameters(), lr=learning_rate, betas=betas, fused=fused)
            for name, module in modules.items()
        }
        self.schedulers = {
            name: torch.optim.lr_scheduler.MultiStepLR(opt, list(settings.decay_steps), settings.decay_factor)
            for name, opt in self.optimisers.items()
        }

    # ---------------------------------------------------------------------------------- one step
    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        drawn = self.sampler.sample_with_origins(self.config.data.batch_size)
        high_res, spacing = drawn.high_res, drawn.spacing_mm
        if self.device.type == "cuda":
            high_res = high_res.pin_memory()  # page-locked, so the copy below is truly asynchronous
        high_res = high_res.to(self.device, non_blocking=True)
        zero = self.magnitude_zeros[drawn.volume]  # each item's scan: where its magnitude 0 lies
        with torch.no_grad():
            low_res = self.degrader(high_res, self.degrade_generator, spacing_mm=spacing, zero=zero)
        if self.channels_last:
            high_res = high_res.contiguous(memory_format=torch.channels_last)
            low_res = low_res.contiguous(memory_format=torch.channels_last)
        return low_res, high_res

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast)

    def _optimise(self, name: str, loss: torch.Tensor) -> None:
        optimiser = self.optimisers[name]
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if name == "generator":  # logged: the rate of this step, before the scheduler moves it on
            self.step_learning_rate = optimiser.param_groups[0]["lr"]
        optimiser.step()
        self.schedulers[name].step()

    def _pretrain_step(self) -> dict[str, torch.Tensor]:
        low_res, high_res = self._batch()
        with self._autocast():
            output = self.generator_run(low_res)
        loss = self.pixel_loss(output.float(), high_res)
        self.guard.track(loss)
        self._optimise("generator", loss)
        return {"loss/pixel": loss.detach()}

    def _gan_step(self) -> dict[str, torch.Tensor]:
        losses = self.config.losses
        low_res, high_res = self._batch()
        self.discriminator.requires_grad_(False)
        with self._autocast():
            # float32 like the real patches (an exact cast of the bf16 values), so a compiled
            # discriminator sees one input dtype: two graphs (with and without input gradient), not three.
            output = self.generator_run(low_res).float()
            fake_logits = self.discriminator_frozen(output).float()
            # The VGG is half of a phase-2 step's FLOPs: it runs under autocast too.
            content = losses.perceptual.weight * self.perceptual_run(output, high_res).float()
        adversarial = self.adversarial_loss(fake_logits, target_is_real=True)
        generator_loss = content + adversarial
        pixel = None
        if losses.pixel_weight_gan > 0:
            pixel = self.pixel_loss(output, high_res)
            generator_loss = generator_loss + losses.pixel_weight_gan * pixel
        self.guard.track(generator_loss)
        self._optimise("generator", generator_loss)

        self.discriminator.requires_grad_(True)
        optimiser = self.optimisers["discriminator"]
        optimiser.zero_grad(set_to_none=True)
        # Real and fake go through separately (BasicSR), so BatchNorm never mixes their statistics;
        # each forward is followed by its backward, as DistributedDataParallel requires.
        with self._autocast():
            real_logits = self.discriminator_run(high_res).float()
        real_loss = self.adversarial_loss(real_logits, target_is_real=True, for_discriminator=True)
        self.guard.track(real_loss)
        real_loss.backward()
        with self._autocast():
            fake_logits_d = self.discriminator_run(output.detach()).float()
        fake_loss = self.adversarial_loss(fake_logits_d, target_is_real=False, for_discriminator=True)
        self.guard.track(fake_loss)
        fake_loss.backward()
        optimiser.step()
        self.schedulers["discriminator"].step()
        result = {
            "loss/content": content.detach(),
            "loss/adversarial": adversarial.detach(),
            "loss/generator": generator_loss.detach(),
            "loss/discriminator": (real_loss + fake_loss).detach(),
            "discriminator/real": torch.sigmoid(real_logits.detach()).mean(),
            "discriminator/fake": torch.sigmoid(fake_logits_d.detach()).mean(),
        }
        if pixel is not None:
            result["loss/pixel"] = pixel.detach()
        return result

    # ------------------------------------------------------------------------------ state handling
    def _save_checkpoint(self) -> None:
        self.dist.sync_buffers(self.generator)
        self.dist.sync_buffers(self.discriminator)
        tensors, parts = capture_state(self)
        if self.reporter is not None:  # the losses summed since the last log: resumed, the log is the same
            logged, parts["log_steps"] = self.reporter.pending()
            tensors.update({f"log.{name}": value for name, value in logged.items()})
        if self.dist.is_main:
            ckpt.save_checkpoint(
                self.checkpoint_dir,
                self.global_step,
                tensors,
                sidecar(self, parts),
                self.config.checkpoint.keep,
            )
        self.guard.remember(tensors, parts)
        self.dist.barrier()

    def _resume(self) -> None:
        tensors, sidecar = ckpt.load_checkpoint(self.resume_from)
        if sidecar.get("phase") not in PHASES:
            raise InputError(f"{self.resume_from}: unknown phase {sidecar.get('phase')!r}")
        self.phase = sidecar["phase"]
        self.step = int(sidecar["step"])
        self.metrics = dict(sidecar.get("metrics", {}))
        self._new_optimisers(self.phase)
        restore_state(self, tensors, sidecar)
        self.guard.remember(tensors, sidecar)
        logged = {key.removeprefix("log."): v for key, v in tensors.items() if key.startswith("log.")}
        self._pending_log = (logged, int(sidecar.get("log_steps", 0)))

    @property
    def global_step(self) -> int:
        offset = self.config.pretrain.steps if self.phase == "gan" else 0
        return offset + self.step

    # ------------------------------------------------------------------------------------ the loop
    def run(self) -> TrainResult:
        """Train both phases (from the last checkpoint when resuming); export a model per phase."""
        config = self.config
        result = TrainResult(self.output_dir)
        if self.resume_from is not None:
            self._resume()
            result.resumed_from = self.global_step
        total = config.pretrain.steps + config.gan.steps
        reporter = Reporter(self, total, enabled=self.dist.is_main, quiet=self.quiet)
        reporter.resume(*self._pending_log)
        self.reporter = reporter
        try:
            with reporter:
                if result.resumed_from is not None:
                    reporter.note(f"resumed from {self.resume_from.name} ({self.phase} step {self.step})")
                start = PHASES.index(self.phase)
                for phase in PHASES[start:]:
                    settings: PhaseConfig = getattr(config, phase)
                    if phase != self.phase or not self.optimisers:
                        self.phase, self.step = phase, 0
                        self._new_optimisers(phase)
                        self.guard.forget()
                    if settings.steps == 0:
                        continue
                    done = model_path(config, phase)
                    if result.resumed_from is not None and self.step >= settings.steps and done.is_file():
                        # Resumed from the phase's last checkpoint, written after its model: nothing
                        # to train, validate, log or export again.
                        result.models[phase] = done
                        continue
                    self._run_phase(settings, reporter)
                    exported = self._finish_phase(reporter)
                    if exported is not None:
                        result.models[phase] = exported
        finally:
            self.dist.close()
            torch.use_deterministic_algorithms(self._was_deterministic)
            torch.set_num_threads(self._threads)
        result.metrics = self.metrics
        result.history = self.history
        return result

    def _run_phase(self, settings: PhaseConfig, reporter: Reporter) -> None:
        config = self.config
        step_function = self._pretrain_step if self.phase == "pretrain" else self._gan_step
        self.generator_run.train()
        self.discriminator_run.train()
        self.guard.start_phase()
        while self.step < settings.steps:
            self.step += 1
            losses = step_function()
            if self._check_due(settings) and not self.guard.check(reporter):
                continue  # the last good state is back; its step is the trainer's again
            reporter.step(losses)
            every = config.validation.every
            if every and self.step % every == 0 and self.step < settings.steps:
                self._validate(reporter)
            images = config.logging.images_every
            if images and self.step % images == 0 and self.step < settings.steps:
                self._log_images(reporter)
            if self.step % config.checkpoint.every == 0 and self.step < settings.steps:
                self._save_checkpoint()

    def _check_due(self, settings: PhaseConfig) -> bool:
        """Whether the losses are checked at this step: before anything reads or keeps the state
        (logging, validation, checkpoint, the phase's end). Between checks no step waits for the host;
        a non-finite loss found at a check sends the run back to the last good state (a checkpoint),
        so the steps in between are dropped, as the skipped step was when every step was checked."""
        config, step = self.config, self.step
        every = (
            config.logging.every,
            config.checkpoint.every,
            config.validation.every,
            config.logging.images_every,  # an image grid reads the generator too
        )
        return step >= settings.steps or any(n and step % n == 0 for n in every)

    def _validate(self, reporter: Reporter) -> None:
        if not self.validation_sets:
            return
        from srgan_med.train.validation import validate

        self.metrics = validate(
            self.generator, self.validation_sets, self.config.scale, self.device, self.autocast
        )
        reporter.scalars({f"validation/{k}": v for k, v in self.metrics.items()})

    def _log_images(self, reporter: Reporter) -> None:
        """The image grid of the first validation volume (LR | bicubic | SR | HR); rank 0 only
        holds validation sets, so only it draws."""
        if not self.validation_sets or not self.config.logging.images_every:
            return
        from srgan_med.train.validation import image_grid

        grid = image_grid(
            self.generator, self.validation_sets[0], self.config.scale, self.device, self.autocast
        )
        reporter.image("validation/lr_bicubic_sr_hr", grid)

    def _finish_phase(self, reporter: Reporter) -> Path | None:
        """Validate, export the phase's model, then checkpoint: a phase-end checkpoint means the
        model is written, so a run resumed from it has nothing of the phase left to do."""
        from srgan_med.train.provenance import export_model

        path = None
        if self.dist.is_main:
            self._validate(reporter)
            self._log_images(reporter)
            path = export_model(self)
        self._save_checkpoint()  # every rank takes part (collectives), so no file-based condition here
        if path is not None:
            reporter.note(f"{self.phase} done: model written to {path}")
        return path
