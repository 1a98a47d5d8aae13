"""Training output for people: TensorBoard scalars and image grids, and a rich progress bar with ETA.

Losses stay on the device between logging steps (summed as tensors), so the step itself does not wait
for the host; they are read once every ``logging.every`` steps.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def _quiet_tensorboard_thread(args: threading.ExceptHookArgs, previous=threading.excepthook) -> None:
    """``threading.excepthook`` that stays silent for TensorBoard's writer thread.

    That thread keeps its exception (e.g. a full disk) and re-raises it, and the writer raises it
    again in the training thread at the next write, where :class:`Reporter` turns it into one line.
    Printed here as well, it would reach the user as a traceback.
    """
    thread = args.thread
    if type(thread).__name__ == "_AsyncWriterThread" and type(thread).__module__.startswith("tensorboard."):
        return
    previous(args)


threading.excepthook = _quiet_tensorboard_thread


class Reporter:
    """Logs a trainer's progress: every rank sums its losses, the logged means are over all ranks
    (one all-reduce per logging step), and only rank 0 (``enabled``) writes and draws."""

    def __init__(self, trainer, total_steps: int, enabled: bool = True, quiet: bool = False) -> None:
        self.trainer = trainer
        self.total = total_steps
        self.enabled = enabled
        self.quiet = quiet
        self.writer = None
        self.progress = None
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0  # steps in the sums
        self._timed = 0  # steps since _since (a resumed run's sums hold steps it did not time)
        self._since = time.perf_counter()

    def __enter__(self) -> Reporter:
        if not self.enabled:
            return self
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(self.trainer.output_dir) / "tensorboard"
        # purge_step drops events a killed run logged after its last checkpoint, and a fresh run's
        # from step 1: those of a run stopped before its first checkpoint (started again from the
        # beginning, it logged every step twice).
        with self._writing():
            self.writer = SummaryWriter(str(self.log_dir), purge_step=self.trainer.global_step + 1)
        if not self.quiet:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=Console(stderr=True),
            )
            self.progress.start()
            self.task = self.progress.add_task(
                "train", total=self.total, completed=self.trainer.global_step, status=""
            )
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.writer is not None:
            try:
                with self._writing():
                    self.writer.close()
            except OSError:
                if exc[0] is None:  # else the error that ended training is the one to report
                    raise

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Operating-system errors of the TensorBoard writer (disk full) as one-line output errors."""
        from srgan_med.io.atomic import output_write_error

        try:
            yield
        except OSError as error:
            outcome = "training stopped; the checkpoints written so far are kept"
            raise output_write_error(self.log_dir, error, "the TensorBoard log", outcome) from error

    def note(self, message: str) -> None:
        if not self.enabled:
            return
        if self.progress is not None:
            self.progress.console.print(message)
        else:
            logger.info(message)

    def scalars(self, values: dict[str, float]) -> None:
        if self.writer is not None:
            with self._writing():
                for tag, value in values.items():
                    self.writer.add_scalar(tag, value, self.trainer.global_step)

    def image(self, tag: str, image: torch.Tensor) -> None:
        """``image``: ``(1, H, W)`` in [0, 1]."""
        if self.writer is not None:
            with self._writing():
                self.writer.add_image(tag, image, self.trainer.global_step, dataformats="CHW")

    def discard(self) -> None:
        """Forget the losses summed since the last log (steps the divergence guard dropped)."""
        self._sums, self._count, self._timed, self._since = {}, 0, 0, time.perf_counter()

    def _summed_over_ranks(self) -> dict[str, torch.Tensor]:
        """The sums of every rank added up (a collective: every rank calls it at the same step)."""
        dist = self.trainer.dist
        if not dist.enabled or not self._sums:
            return dict(self._sums)
        import torch.distributed

        names = sorted(self._sums)
        stacked = torch.stack([torch.as_tensor(self._sums[name]).float() for name in names])
        torch.distributed.all_reduce(stacked, op=torch.distributed.ReduceOp.SUM)
        return dict(zip(names, stacked.unbind(), strict=True))

    def pending(self) -> tuple[dict[str, torch.Tensor], int]:
        """The losses summed since the last log, over all ranks (on the CPU), and how many steps
        they hold, for a checkpoint: a run resumed from it logs the same means as an uninterrupted
        one. Every rank calls it (a collective)."""
        summed = self._summed_over_ranks()
        return {name: total.detach().cpu() for name, total in summed.items()}, self._count

    def resume(self, sums: dict[str, torch.Tensor], count: int) -> None:
        """Take back what :meth:`pending` gave to a checkpoint: rank 0 holds the ranks' sums, the
        others start from zero, so the next all-reduce adds them up once."""
        device = self.trainer.device
        keep = self.trainer.dist.is_main
        self._sums = {
            name: (total if keep else torch.zeros_like(total)).to(device) for name, total in sums.items()
        }
        self._count = int(count) if sums else 0

    def step(self, losses: dict[str, torch.Tensor]) -> None:
        for name, value in losses.items():
            self._sums[name] = self._sums.get(name, 0) + value.detach()
        self._count += 1
        self._timed += 1
        trainer = self.trainer
        phase_steps = getattr(trainer.config, trainer.phase).steps
        if trainer.step % trainer.config.logging.every and trainer.step != phase_steps:
            if self.progress is not None:
                self.progress.update(self.task, completed=trainer.global_step)
            return
        summed = self._summed_over_ranks()  # every rank, at the same step
        if not self.enabled:
            self.discard()
            return
        elapsed = time.perf_counter() - self._since
        world = trainer.dist.world_size
        patches = self._timed * trainer.config.data.batch_size * world
        means = {name: float(total.item()) / (self._count * world) for name, total in summed.items()}
        values = dict(means)
        values["learning_rate"] = trainer.step_learning_rate  # the rate this step ran at
        values["throughput/patches_per_s"] = patches / max(elapsed, 1e-9)
        self.scalars(values)
        trainer.history.append({"phase": trainer.phase, "step": trainer.step, **values})
        self.discard()
        if self.progress is not None:
            shown = " ".join(f"{k.split('/')[-1]}={v:.4g}" for k, v in means.items() if k.startswith("loss/"))
            self.progress.update(
                self.task, completed=trainer.global_step, description=trainer.phase, status=shown
            )
