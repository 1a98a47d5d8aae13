"""The divergence guard: a run whose losses stop being finite goes back to its last good state.

Every loss of every step is folded into one flag on the device, so a step never waits for the host.
The flag is read (one sync) only at the steps where something reads or keeps the state: logging,
validation, checkpoints and the phase's end (``Trainer._check_due``). A non-finite loss found there
sends weights and optimisers back to the last checkpoint (or the phase's start); the data stream goes
on, so the retry sees new patches. After ``MAX_RESTORES`` restores in a row the run stops.
"""

from __future__ import annotations

import logging

import torch

from srgan_med.errors import TrainingDivergedError
from srgan_med.train.state import capture_state, restore_state

logger = logging.getLogger(__name__)

MAX_RESTORES = 3


class DivergenceGuard:
    """Watches ``trainer``'s losses and restores its last good state when they stop being finite."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.good: dict | None = None
        self.restores = 0
        self.finite = torch.ones((), dtype=torch.bool, device=trainer.device)
        self.checked_step = 0

    def track(self, loss: torch.Tensor) -> None:
        """Fold ``loss``'s finiteness into the device-side flag (no host sync)."""
        self.finite.logical_and_(torch.isfinite(loss.detach()))

    def all_finite(self) -> bool:
        """Whether every loss since the last call was finite on every rank (one host sync); resets."""
        finite = self.trainer.dist.all_true(self.finite)
        self.finite.fill_(True)
        return finite

    def remember(self, tensors: dict[str, torch.Tensor] | None = None, parts: dict | None = None) -> None:
        """Keep (a copy of) the state to go back to: the trainer's now, or the one given."""
        if tensors is None or parts is None:
            tensors, parts = capture_state(self.trainer)
        self.good = {
            "tensors": {k: v.detach().clone() for k, v in tensors.items()},
            "parts": parts,
            "step": self.trainer.step,
        }

    def forget(self) -> None:
        """A new phase: its own start becomes the state to go back to."""
        self.good = None

    def start_phase(self) -> None:
        if self.good is None:
            self.remember()
        self.finite.fill_(True)
        self.checked_step = self.trainer.step

    def check(self, reporter) -> bool:
        """At a check step: ``True`` when every loss since the last check was finite; otherwise the
        steps since are dropped from the report, the last good state comes back, and ``False``."""
        if self.all_finite():
            self.restores = 0
            self.checked_step = self.trainer.step
            return True
        reporter.discard()
        self._restore()
        return False

    def _restore(self) -> None:
        trainer = self.trainer
        self.restores += 1
        if self.good is None or self.restores > MAX_RESTORES:
            raise TrainingDivergedError(
                f"{trainer.phase} step {trainer.step}: losses are not finite again after {MAX_RESTORES} "
                "restores; lower the learning rate or check the data"
            )
        restore_state(trainer, self.good["tensors"], self.good["parts"], data_position=False)
        message = (
            f"{trainer.phase} steps {self.checked_step + 1}-{trainer.step}: non-finite loss; the state of "
            f"step {self.good['step']} restored"
        )
        logger.warning(message)  # the CLI prints it once, as "warning: ..." (a note beside it said it twice)
        trainer.step = self.checked_step = self.good["step"]
