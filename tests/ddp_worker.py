"""Run under ``torchrun``: train the tiny config with DDP and save this rank's final state.

Used by tests/test_train_ddp.py; not a test itself (no ``test_`` prefix).
Usage: torchrun --nproc_per_node 2 tests/ddp_worker.py CONFIG OUTPUT_DIR [KEY=VALUE ...]
"""

from __future__ import annotations

import os
import sys

from safetensors.torch import save_file

from srgan_med.train import Trainer, load_train_config


def main() -> None:
    config_path, output_dir, *overrides = sys.argv[1:]
    config = load_train_config(config_path, [f"output_dir={output_dir}", *overrides])
    trainer = Trainer(config, resume=False, quiet=True)
    trainer.run()
    rank = int(os.environ["RANK"])
    tensors = {f"generator.{k}": v for k, v in trainer.generator.state_dict().items()}
    tensors.update({f"discriminator.{k}": v for k, v in trainer.discriminator.state_dict().items()})
    tensors["sampler_state"] = trainer.sampler.get_state()
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, os.path.join(output_dir, f"rank{rank}.safetensors")
    )


if __name__ == "__main__":
    main()
