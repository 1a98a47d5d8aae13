"""Checkpoints without pickle: tensors in ``safetensors``, everything else in a JSON sidecar.

A checkpoint is ``step-NNNNNNN.safetensors`` + ``step-NNNNNNN.json`` in ``<output_dir>/checkpoints``.
Both are written atomically (temporary file + rename) and the JSON goes last, so a checkpoint exists
exactly when its JSON does; a run killed mid-write leaves at most a temporary file, which is ignored.
Optimiser states are flattened into named tensors plus JSON-able ``param_groups``; learning-rate
schedulers' states and RNG states travel the same way (RNG states are ``uint8`` tensors).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from srgan_med.errors import InputError

FORMAT = "srgan-med-checkpoint"
VERSION = 1
_NAME = re.compile(r"^step-(\d{7,})\.json$")


def _atomic_write(path: Path, write) -> None:
    """``write(temporary)``, flushed to disk, then renamed onto ``path`` (the project's atomic output)."""
    from srgan_med.io.atomic import atomic_output

    with atomic_output(path, overwrite=True) as temporary:
        write(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())


def optimiser_to_flat(prefix: str, optimiser: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, json_part)`` holding ``optimiser.state_dict()`` without pickle."""
    state = optimiser.state_dict()
    tensors, scalars = {}, {}
    for param_id, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{param_id}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{param_id}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimiser_from_flat(prefix: str, tensors: dict[str, torch.Tensor], part: dict) -> dict:
    """The ``state_dict`` that :func:`optimiser_to_flat` flattened."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            param_id, key = name[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(param_id), {})[key] = value
    for name, value in part.get("scalars", {}).items():
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    groups = [
        dict(group, betas=tuple(group["betas"])) if "betas" in group else group
        for group in part["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def scheduler_to_json(scheduler) -> dict:
    state = dict(scheduler.state_dict())
    if isinstance(state.get("milestones"), Counter):
        state["milestones"] = {str(k): v for k, v in state["milestones"].items()}
    return state


def scheduler_from_json(state: dict) -> dict:
    state = dict(state)
    if isinstance(state.get("milestones"), dict):
        state["milestones"] = Counter({int(k): v for k, v in state["milestones"].items()})
    return state


def save_checkpoint(
    folder: Path, step: int, tensors: dict[str, torch.Tensor], sidecar: dict, keep: int
) -> Path:
    """Write checkpoint ``step`` atomically and delete all but the ``keep`` newest. Returns the JSON path."""
    from srgan_med.io.atomic import save_safetensors

    stem = f"step-{step:07d}"
    weights = folder / f"{stem}.safetensors"
    sidecar = {"format": FORMAT, "version": VERSION, "weights": weights.name, **sidecar}
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _atomic_write(weights, lambda p: save_safetensors(tensors, p))
    _atomic_write(folder / f"{stem}.json", lambda p: p.write_text(json.dumps(sidecar, indent=1, default=str)))
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
        old.with_suffix(".safetensors").unlink(missing_ok=True)
    return folder / f"{stem}.json"


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints (their JSON sidecars) in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name) and p.with_suffix(".safetensors").is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def read_sidecar(path: Path) -> dict:
    """The JSON sidecar of a checkpoint (no weights read); raises if it is not a readable one."""
    try:
        sidecar = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: unreadable checkpoint sidecar ({error})") from None
    if sidecar.get("format") != FORMAT:
        raise InputError(f"{path}: not an srgan-med checkpoint")
    if sidecar.get("version") != VERSION:
        raise InputError(
            f"{path}: checkpoint version {sidecar.get('version')} (this srgan-med reads {VERSION})"
        )
    return sidecar


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, sidecar)`` of the checkpoint whose JSON is ``path``; never unpickles."""
    from safetensors.torch import load_file

    sidecar = read_sidecar(path)
    weights = Path(path).with_name(sidecar["weights"])
    try:
        tensors = load_file(str(weights))
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error types for bad files
        raise InputError(
            f"{weights}: unreadable checkpoint weights ({' '.join(str(error).split())[:120]})"
        ) from None
    return tensors, sidecar


def prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix.``, with the prefix removed."""
    start = prefix + "."
    return {k[len(start) :]: v for k, v in tensors.items() if k.startswith(start)}
