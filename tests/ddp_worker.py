"""Run under ``torchrun``: train the tiny config with DDP and save this rank's final state.

Used by tests/test_train_ddp.py; not a test itself (no ``test_`` prefix).
Usage: torchrun --nproc_per_node 2 tests/ddp_worker.py CONFIG OUTPUT_DIR [KEY=VALUE ...]
"""

from __future__ import annotations

import json
import os
import sys

from safetensors.torch import save_file

from srgan_med.train import Trainer, load_train_config


class RecordingTrainer(Trainer):
    """Keeps this rank's own pre-training losses (a host sync per step: tests only), so the test can
    check that the logged loss is the mean over the ranks."""

    recorded: list[float]

    def _pretrain_step(self):
        losses = super()._pretrain_step()
        self.recorded = getattr(self, "recorded", [])
        self.recorded.append(float(losses["loss/pixel"]))
        return losses


def main() -> None:
    config_path, output_dir, *overrides = sys.argv[1:]
    config = load_train_config(config_path, [f"output_dir={output_dir}", *overrides])
    trainer = RecordingTrainer(config, resume=False, quiet=True)
    result = trainer.run()
    rank = int(os.environ["RANK"])
    with open(os.path.join(output_dir, f"rank{rank}.json"), "w") as handle:
        json.dump({"pixel_losses": trainer.recorded, "history": result.history}, handle)
    tensors = {f"generator.{k}": v for k, v in trainer.generator.state_dict().items()}
    tensors.update({f"discriminator.{k}": v for k, v in trainer.discriminator.state_dict().items()})
    tensors["sampler_state"] = trainer.sampler.get_state()
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, os.path.join(output_dir, f"rank{rank}.safetensors")
    )


if __name__ == "__main__":
    main()
