"""Training configs: shipped configs load; unknown keys and bad values fail with the dotted key path."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from srgan_med.cli import app
from srgan_med.errors import ConfigError
from srgan_med.schema import apply_overrides
from srgan_med.train import load_train_config

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["ct.yaml", "mr.yaml", "tiny.yaml"])
def test_shipped_configs_load(name):
    config = load_train_config(REPO / "configs" / name)
    assert config.base_dir == str((REPO / "configs").resolve())
    assert config.data.patch_size % config.scale == 0
    assert config.pretrain.steps > 0


def test_ct_config_follows_the_paper():
    config = load_train_config(REPO / "configs" / "ct.yaml")
    assert (config.generator.blocks, config.generator.width) == (16, 64)
    assert config.losses.adversarial_weight == pytest.approx(1e-3)
    assert dict(config.losses.perceptual.layer_weights) == {"relu5_4": 1.0}
    assert config.losses.perceptual.weights == "imagenet"


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data: {bogus: 1}\n", r"data\.bogus: unknown key"),
        ("gan: {learning_rate: fast}\n", r"gan\.learning_rate: expected a number, got 'fast'"),
        ("scale: 5\n", r"scale: must be one of 2, 3, 4, 8"),
        ("scale: 4\ndata: {patch_size: 30}\n", r"data\.patch_size: must be a multiple of scale 4"),
        (
            "losses: {perceptual: {layer_weights: {relu9_9: 1}}}\n",
            r"layer_weights\.relu9_9: not a VGG19 layer",
        ),
        ("losses: {pixel: huber}\n", r"losses\.pixel: must be one of mse, l1"),
        ("pretrain: {steps: -1}\n", r"pretrain\.steps: must be non-negative"),
        ("pretrain: {steps: 0}\ngan: {steps: 0}\n", r"at least one phase needs steps"),
        ("gan: {decay_steps: [5, 2]}\n", r"gan\.decay_steps: must be increasing"),
        ("performance: {compile: maybe}\n", r"performance\.compile: expected true or false"),
        ("performance: {bf16: fast}\n", r"performance\.bf16: must be one of auto, true, false, got 'fast'"),
        (
            "performance: {compile_mode: turbo}\n",
            r"performance\.compile_mode: must be one of default, reduce-overhead",
        ),
        ("performance: {output_conv: fft}\n", r"performance\.output_conv: must be one of conv, shift-sum"),
        ("optimiser: {lr_scaling: cubic}\n", r"optimiser\.lr_scaling: must be one of none, linear, sqrt"),
        ("optimiser: {reference_batch: 0}\n", r"optimiser\.reference_batch: must be positive"),
        ("- a list\n", r"must be a mapping"),
        ("data: [\n", r"cannot read training config"),
        ("scale: 2\nname: a\nscale: 4\n", r"training config \(line 3: the key 'scale' is given twice\)"),
        ("gan: {steps: 1}\ngan: {steps: 2}\n", r"line 2: the key 'gan' is given twice"),
        ("data: {patch_size: 32, patch_size: 64}\n", r"line 1: the key 'patch_size' is given twice"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(_write(tmp_path, text))


def test_exponents_without_a_dot_are_numbers(tmp_path):
    """PyYAML (YAML 1.1) reads ``1e-4`` as text: ``learning_rate: 1e-4`` was refused with "expected
    a number, got '1e-4'"; only ``1.0e-4`` passed."""
    path = _write(tmp_path, "pretrain: {learning_rate: 1e-4}\ngan: {steps: 1E3}\n")
    config = load_train_config(path, ["gan.learning_rate=5e-5", "losses.adversarial_weight=1e-3"])
    assert config.pretrain.learning_rate == 1e-4 and config.gan.learning_rate == 5e-5
    assert config.gan.steps == 1000 and config.losses.adversarial_weight == 1e-3
    with pytest.raises(ConfigError, match=r"gan\.learning_rate: expected a number, got '1e-4x'"):
        load_train_config(path, ["gan.learning_rate=1e-4x"])


def test_a_degradation_yaml_with_a_key_twice_is_refused(tmp_path):
    from srgan_med.degrade import load_degradation_preset

    path = tmp_path / "blur.yaml"
    path.write_text("modality: CT\nblur: {fwhm_mm: [1.0, 2.0]}\nblur: {fwhm_mm: [3.0, 4.0]}\n")
    with pytest.raises(ConfigError, match=r"cannot read degradation preset \(line 3: the key 'blur'"):
        load_degradation_preset(path)


def test_overrides_are_typed_and_checked(tmp_path):
    path = _write(tmp_path, "gan: {steps: 3}\n")
    config = load_train_config(path, ["gan.steps=7", "losses.perceptual.weights=random", "data.train=[a, b]"])
    assert config.gan.steps == 7 and config.losses.perceptual.weights == "random"
    assert config.data.train == ("a", "b")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_train_config(path, ["gan.steps"])
    with pytest.raises(ConfigError, match=r"gan\.steps\.x: unknown key|gan\.steps is not a section"):
        load_train_config(path, ["gan.steps.x=1"])
    with pytest.raises(ConfigError, match=r"gan\.stepz: unknown key"):
        load_train_config(path, ["gan.stepz=1"])
    # Overrides never change the caller's mapping.
    data = {"gan": {"steps": 1}}
    assert apply_overrides(data, ["gan.steps=2"]) == {"gan": {"steps": 2}} and data == {"gan": {"steps": 1}}


@pytest.mark.parametrize(("scaling", "factor"), [("none", 1.0), ("linear", 8.0), ("sqrt", 8.0**0.5)])
def test_learning_rate_follows_the_global_batch(scaling, factor):
    config = load_train_config(REPO / "configs" / "ct.yaml", [f"optimiser.lr_scaling={scaling}"])
    assert config.optimiser.reference_batch == 16
    assert config.optimiser.lr_factor(64, processes=2) == pytest.approx(factor)  # 128 patches a step


def test_trainer_optimisers_use_the_scaled_learning_rate(tmp_path):
    from srgan_med.train import Trainer

    config = load_train_config(
        REPO / "configs" / "tiny.yaml",
        [f"output_dir={tmp_path / 'run'}", "optimiser.lr_scaling=linear", "optimiser.reference_batch=2"],
    )
    trainer = Trainer(config, quiet=True)  # tiny: batch 4, so twice the written rates
    for phase in ("pretrain", "gan"):
        trainer._new_optimisers(phase)
        expected = 2 * getattr(config, phase).learning_rate
        assert {g["lr"] for o in trainer.optimisers.values() for g in o.param_groups} == {expected}


def test_cli_reports_config_errors_in_one_line(tmp_path):
    path = _write(tmp_path, "gan: {learning_rate: fast}\n")
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == [f"error: {path}: gan.learning_rate: expected a number, got 'fast'"]
    missing = CliRunner().invoke(app, ["train", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "training config not found" in missing.output
    folder = CliRunner().invoke(app, ["train", str(tmp_path)])
    assert folder.exit_code == 2 and f"{tmp_path}: a folder; give the training config's YAML" in folder.output
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x01 not text")
    result = CliRunner().invoke(app, ["train", str(binary)])
    assert result.exit_code == 2 and f"error: {binary}: cannot read training config (" in result.stderr
