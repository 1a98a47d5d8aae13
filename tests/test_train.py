"""The two-phase trainer on the tiny CPU config: it learns, logs, checkpoints, resumes bit-exactly,
guards against divergence, and runs under torchrun with DDP (gloo)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from srgan_med.cli import app
from srgan_med.errors import TrainingDivergedError
from srgan_med.losses import AdversarialLoss, pixel_loss
from srgan_med.losses.perceptual import RANDOM_SOURCE, vgg19_features
from srgan_med.models.bundle import load_bundle
from srgan_med.train import Trainer, load_train_config
from srgan_med.train.checkpoint import list_checkpoints, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"


def tiny(tmp_path: Path, *overrides: str):
    return load_train_config(TINY, [f"output_dir={tmp_path / 'run'}", *overrides])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One uninterrupted tiny run of both phases, shared by the tests that only read its outputs."""
    tmp_path = tmp_path_factory.mktemp("tiny")
    started = time.perf_counter()
    result = Trainer(tiny(tmp_path), quiet=True).run()
    return result, time.perf_counter() - started


def test_tiny_run_of_both_phases_learns_in_under_a_minute(tiny_run):
    result, seconds = tiny_run
    assert seconds < 60
    pixel = [h["loss/pixel"] for h in result.history if h["phase"] == "pretrain"]
    assert len(pixel) == 6  # logged every 5 of 30 steps
    assert pixel[-1] < 0.5 * pixel[0]
    gan = [h for h in result.history if h["phase"] == "gan"]
    assert gan and all(0 < h["discriminator/real"] < 1 and 0 < h["discriminator/fake"] < 1 for h in gan)
    assert {"psnr", "ssim", "psnr_bicubic", "ssim_bicubic"} <= set(result.metrics)


def test_exported_models_are_loadable_bundles_that_say_the_vgg_was_random(tiny_run):
    result, _ = tiny_run
    assert set(result.models) == {"pretrain", "gan"}
    for _phase, path in result.models.items():
        bundle = load_bundle(str(path))
        assert bundle.scale == 2 and bundle.modality == "CT"
        assert bundle.card["vgg_weights"] == RANDOM_SOURCE
        assert bundle.card["training_data"] == ["CT_small.dcm"]
        low_res = torch.rand(1, 1, 10, 12)
        assert bundle.generator(low_res).shape == (1, 1, 20, 24)
    srresnet = load_bundle(str(result.models["pretrain"])).generator.state_dict()
    srgan = load_bundle(str(result.models["gan"])).generator.state_dict()
    assert not torch.equal(srresnet["tail.weight"], srgan["tail.weight"])  # phase 2 changed the weights


def test_checkpoints_are_safetensors_and_json_only(tiny_run):
    result, _ = tiny_run
    folder = result.output_dir / "checkpoints"
    assert {p.suffix for p in folder.iterdir()} == {".json", ".safetensors"}
    newest = list_checkpoints(folder)[-1]
    tensors, sidecar = load_checkpoint(newest)
    assert sidecar["phase"] == "gan" and sidecar["step"] == 10 and sidecar["global_step"] == 40
    assert sidecar["perceptual_weights"] == RANDOM_SOURCE
    assert sidecar["degradation"]["modality"] == "CT" and sidecar["versions"]["torch"] == torch.__version__
    assert sidecar["config"]["losses"]["perceptual"]["weights"] == "random"
    assert "optim.discriminator.0.exp_avg" in tensors and "rng.sampler.rank0" in tensors
    assert len(list_checkpoints(folder)) == 2  # checkpoint.keep
    # weights as readable as their sidecars (safetensors made them 0600 whatever the umask)
    modes = {p.stat().st_mode & 0o777 for p in (*folder.iterdir(), *(result.output_dir / "models").iterdir())}
    from srgan_med.io.atomic import _umask

    assert modes == {0o666 & ~_umask()}, sorted(map(oct, modes))


def test_unreadable_checkpoint_sidecar_is_an_input_error(tmp_path):
    from srgan_med.errors import InputError

    for name, content in [("step-0000001.json", b"\xff\xfe binary"), ("step-0000002.json", b"{not json")]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InputError, match=f"{name}: unreadable checkpoint sidecar"):
            load_checkpoint(tmp_path / name)


def test_tensorboard_has_losses_metrics_and_image_grids(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, _ = tiny_run
    events = EventAccumulator(str(result.output_dir / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {
        "loss/pixel",
        "loss/content",
        "loss/adversarial",
        "loss/discriminator",
        "discriminator/real",
        "discriminator/fake",
        "learning_rate",
        "throughput/patches_per_s",
        "validation/psnr",
        "validation/ssim_bicubic",
    } <= tags
    pixel = events.Scalars("loss/pixel")
    assert [e.step for e in pixel] == [5, 10, 15, 20, 25, 30]
    image = events.Images("validation/lr_bicubic_sr_hr")[-1]
    assert image.width == 4 * image.height  # LR | bicubic | SR | HR side by side


def test_images_follow_images_every_and_the_logged_rate_is_the_steps_own(tmp_path):
    """Image grids came only at validation steps (images_every=3 with validation every 4 gave
    steps 12 only), and the logged learning rate was the next step's (the decayed rate at the
    last step before the decay)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = tiny(
        tmp_path, "pretrain.steps=12", "gan.steps=0", "logging.every=2", "logging.images_every=3",
        "validation.every=4", "pretrain.decay_steps=[4]", "pretrain.decay_factor=0.5", "checkpoint.every=100",
    )  # fmt: skip
    Trainer(config, quiet=True).run()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    assert [e.step for e in events.Images("validation/lr_bicubic_sr_hr")] == [3, 6, 9, 12]
    rates = {e.step: e.value for e in events.Scalars("learning_rate")}
    assert rates[4] == pytest.approx(1e-3) and rates[6] == pytest.approx(5e-4)


def test_a_run_stopped_before_its_first_checkpoint_starts_again_without_logging_twice(tmp_path, monkeypatch):
    """Interrupted before any checkpoint, the message promised a resume from "the last checkpoint",
    and the rerun from scratch appended a second event file: every step appeared twice."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    config = tiny(tmp_path, "pretrain.steps=10", "gan.steps=0", "checkpoint.every=100")
    Trainer(config, quiet=True).run()
    for folder in ("checkpoints", "models"):  # what a Ctrl-C before the first checkpoint leaves
        for path in (run / folder).iterdir():
            path.unlink()
    Trainer(config, quiet=True).run()
    assert len(list((run / "tensorboard").iterdir())) == 2
    steps = [e.step for e in EventAccumulator(str(run / "tensorboard")).Reload().Scalars("loss/pixel")]
    assert steps == [5, 10]

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "run", interrupted)
    fresh = ["train", str(TINY), "--set", f"output_dir={tmp_path / 'fresh'}"]
    result = CliRunner().invoke(app, fresh)
    assert result.exit_code == 130
    last = result.output.strip().splitlines()[-1]  # after the random-VGG warning
    assert last == "error: interrupted; no checkpoint was written yet: the same command starts the run again"


def _train_command(output_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "srgan_med", "train", str(TINY), "-q",
        "--set", f"output_dir={output_dir}", "--set", "checkpoint.every=7",  # not a multiple of logging's 5
        "--set", "pretrain.steps=20", "--set", "gan.steps=30",
        "--set", "data.cache=disk",  # the resumed run reads its volumes back from the disk cache
    ]  # fmt: skip


def test_sigkill_and_resume_ends_bit_for_bit_like_an_uninterrupted_run(tmp_path):
    env = dict(os.environ)
    straight = tmp_path / "straight"
    subprocess.run(_train_command(straight), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(_train_command(killed), env=env, stderr=subprocess.DEVNULL)
    marker = killed / "checkpoints" / "step-0000027.json"  # 7 steps into phase 2, 2 after a log
    deadline = time.monotonic() + 120
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "models" / "tiny-ct-x2-srgan.safetensors").exists()

    resumed = subprocess.run(_train_command(killed), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from step-00000" in resumed.stderr
    assert len(list((killed / "cache").glob("*.pt"))) == 1
    for name in ("checkpoints/step-0000050.safetensors", "models/tiny-ct-x2-srgan.safetensors"):
        expected, got = load_file(str(straight / name)), load_file(str(killed / name))
        assert expected.keys() == got.keys()
        different = [k for k in expected if not torch.equal(expected[k], got[k])]
        assert not different, f"{name}: {different[:5]}"
    # The TensorBoard logs too: each value once, and the losses logged after the resume are the
    # means over the same steps (those summed before the kill came back from the checkpoint).
    logs = [_scalars(run / "tensorboard") for run in (straight, killed)]
    assert logs[0].keys() == logs[1].keys() and "loss/pixel" in logs[0]
    for tag in logs[0]:
        if tag != "throughput/patches_per_s":
            assert [step for step, _ in logs[1][tag]] == [step for step, _ in logs[0][tag]], tag
            assert [v for _, v in logs[1][tag]] == pytest.approx([v for _, v in logs[0][tag]], rel=1e-6), tag


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder)).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_resuming_a_finished_phase_does_not_log_or_export_it_again(tmp_path):
    """A run resumed from a phase's last checkpoint validated, logged and exported that phase a
    second time (the TensorBoard log had its step twice; the model file was rewritten)."""
    config = tiny(tmp_path, "gan.steps=0")
    first = Trainer(config, quiet=True).run()
    model = first.models["pretrain"]
    written = model.stat().st_mtime_ns
    again = Trainer(config, quiet=True).run()
    assert again.models == {"pretrain": model} and model.stat().st_mtime_ns == written
    steps = [step for step, _ in _scalars(first.output_dir / "tensorboard")["validation/psnr"]]
    assert steps == sorted(set(steps))
    more = Trainer(tiny(tmp_path, "gan.steps=3"), quiet=True).run()  # a longer GAN phase: it goes on
    assert set(more.models) == {"pretrain", "gan"}


def test_non_finite_loss_restores_the_last_good_state(tmp_path, caplog, monkeypatch):
    import logging

    monkeypatch.setattr(logging.getLogger("srgan_med"), "propagate", True)
    trainer = Trainer(tiny(tmp_path, "gan.steps=0", "pretrain.steps=12", "checkpoint.every=5"), quiet=True)
    real_loss, calls = trainer.pixel_loss, {"n": 0}

    def sometimes_nan(output, target):
        calls["n"] += 1
        loss = real_loss(output, target)
        return loss * float("nan") if calls["n"] == 8 else loss  # step 8: after the step-5 checkpoint

    trainer.pixel_loss = sometimes_nan
    with caplog.at_level("WARNING", logger="srgan_med"):
        result = trainer.run()
    assert "pretrain steps 6-10: non-finite loss; the state of step 5 restored" in caplog.text
    assert (
        result.history[-1]["step"] == 12
        and torch.isfinite(torch.stack([p.detach().sum() for p in trainer.generator.parameters()])).all()
    )

    always = Trainer(tiny(tmp_path, "gan.steps=0", "output_dir=" + str(tmp_path / "nan")), quiet=True)
    always.pixel_loss = lambda output, target: real_loss(output, target) * float("nan")
    with pytest.raises(TrainingDivergedError, match="not finite again after 3 restores"):
        always.run()


def test_missing_vgg_weights_stop_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    output = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["train", str(TINY), "--set", f"output_dir={output}", "--set", "losses.perceptual.weights=imagenet"],
    )
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ImageNet VGG19 weights not found") and "vgg19-dcbb9e9d.pth" in line
    assert line.endswith("or set losses.perceptual.weights to its path")  # the config's own key
    assert not output.exists()


def test_resume_flags_protect_existing_runs(tiny_run, tmp_path):
    result, _ = tiny_run
    existing = ["train", str(TINY), "--set", f"output_dir={result.output_dir}", "--no-resume"]
    refused = CliRunner().invoke(app, existing)
    assert refused.exit_code == 2 and "holds checkpoints of an earlier run" in refused.output
    nothing = CliRunner().invoke(
        app, ["train", str(TINY), "--set", f"output_dir={tmp_path / 'new'}", "--resume"]
    )
    assert nothing.exit_code == 2 and "no checkpoint in" in nothing.output
    other = ["train", str(TINY), "--set", f"output_dir={result.output_dir}", "--set", "generator.width=32"]
    refused = CliRunner().invoke(app, other)  # the weights would not load: said before the data loads
    assert refused.exit_code == 2, refused.output
    assert "holds checkpoints of other networks (generator {'blocks': 2, 'width': 16" in refused.output
    assert "this config: generator {'blocks': 2, 'width': 32" in refused.output


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        (["pretrain.learning_rate=0.1"], "pretrain.learning_rate: 0.001 -> 0.1"),
        (["data.train=[example:mr-small]", "modality=MR", "degradation=mr"], "modality: 'CT' -> 'MR'"),
        (["seed=3", "losses.adversarial_weight=0.01"], "seed: 0 -> 3; losses.adversarial_weight"),
        (["pretrain.steps=40"], "pretrain.steps: 30 -> 40"),  # the GAN phase had begun
    ],
)
def test_resuming_with_other_settings_is_refused_naming_them(tiny_run, changes, says):
    """A resumed run with another learning rate, data or modality went on silently: the optimiser
    kept the old rate while the sidecars recorded the new one, and the exported model's card named
    data it had partly not been trained on."""
    result, _ = tiny_run
    before = sorted(p.name for p in (result.output_dir / "checkpoints").iterdir())
    sets = [item for change in changes for item in ("--set", change)]
    refused = CliRunner().invoke(app, ["train", str(TINY), "--set", f"output_dir={result.output_dir}", *sets])
    assert refused.exit_code == 2, refused.output
    (line,) = refused.output.strip().splitlines()
    assert line.startswith(f"error: {result.output_dir} holds checkpoints of a run with other settings (")
    assert says in line and line.endswith("or set output_dir to another folder for a new run")
    assert sorted(p.name for p in (result.output_dir / "checkpoints").iterdir()) == before


def test_resuming_with_fewer_pretrain_steps_than_were_done_is_refused(tmp_path):
    """pretrain.steps may change while pre-training lasts, but fewer than the checkpoint had done
    numbered the GAN steps below it: its checkpoints were pruned as written, the pretrain checkpoint
    stayed the newest, and every rerun of the command trained the GAN phase again."""
    output = tmp_path / "run"
    base = ["train", str(TINY), "--set", f"output_dir={output}", "--set", "checkpoint.every=3", "-q"]
    first = CliRunner().invoke(app, [*base, "--set", "pretrain.steps=6", "--set", "gan.steps=0"])
    assert first.exit_code == 0, first.output
    before = sorted(p.name for p in (output / "checkpoints").iterdir())
    shorter = CliRunner().invoke(app, [*base, "--set", "pretrain.steps=3", "--set", "gan.steps=2"])
    assert shorter.exit_code == 2, shorter.output
    (line,) = shorter.output.strip().splitlines()
    assert line == (
        "error: pretrain.steps: 3 is fewer than the 6 steps step-0000006.json has pre-trained; "
        "resume with at least 6, or set output_dir to another folder for a new run"
    )
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == before


def test_resuming_where_the_same_words_name_other_files_is_refused(tmp_path, small_ct_volume):
    """The check compared data.train as written: the same relative name read from another base_dir
    (the config copied beside another scan) resumed silently on other data; so did a degradation
    YAML edited between the runs."""
    from conftest import write_nifti

    volume, affine = small_ct_volume
    for folder, offset in (("a", 0), ("b", 300)):
        (tmp_path / folder).mkdir()
        write_nifti(tmp_path / folder / "scan.nii.gz", (volume + offset).astype(np.int16), affine)
    (tmp_path / "a" / "blur.yaml").write_text((REPO / "configs" / "degradation" / "ct.yaml").read_text())
    output = tmp_path / "run"
    sets = [
        f"output_dir={output}", "data.train=[scan.nii.gz]", "data.validation=[]", "data.patch_size=16",
        "degradation=blur.yaml", "pretrain.steps=4", "gan.steps=0", "checkpoint.every=2",
    ]  # fmt: skip

    def train(base: str):  # the config copied beside the scan, as a user copies it
        config = tmp_path / base / "tiny.yaml"
        config.write_text(TINY.read_text())
        words = [word for item in sets for word in ("--set", item)]
        return CliRunner().invoke(app, ["train", str(config), "--quiet", *words])

    assert train("a").exit_code == 0
    (tmp_path / "b" / "blur.yaml").write_text((tmp_path / "a" / "blur.yaml").read_text())
    refused = train("b")
    assert refused.exit_code == 2, refused.output
    (line,) = refused.output.strip().splitlines()
    said = (
        f"data.train: '{tmp_path / 'a' / 'scan.nii.gz'}' -> '{tmp_path / 'b' / 'scan.nii.gz'} (other data)'"
    )
    assert said in line, line
    # the same data copied elsewhere (a job's node-local scratch, a moved project) resumes
    (tmp_path / "c").mkdir()
    shutil.copy(tmp_path / "a" / "scan.nii.gz", tmp_path / "c" / "scan.nii.gz")
    shutil.copy(tmp_path / "a" / "blur.yaml", tmp_path / "c" / "blur.yaml")
    moved = train("c")
    assert moved.exit_code == 0, moved.output
    # ...also named by another path in the config (the words differ, the data do not)
    sets.append(f"data.train=[{tmp_path / 'c' / 'scan.nii.gz'}]")
    moved = train("c")
    assert moved.exit_code == 0, moved.output
    sets.append(f"data.train=[{tmp_path / 'c' / 'scan.nii.gz'},{tmp_path / 'b' / 'scan.nii.gz'}]")
    refused = train("c")
    assert refused.exit_code == 2 and "data.train: '1 scan(s)' -> '2 scan(s)'" in refused.output, (
        refused.output
    )
    sets.pop()
    sets.pop()
    # a checkpoint of an older version (no fingerprints): its resolved paths decide
    for sidecar_path in (output / "checkpoints").glob("*.json"):
        sidecar = json.loads(sidecar_path.read_text())
        del sidecar["data"]["train_fingerprints"]
        sidecar_path.write_text(json.dumps(sidecar))
    refused = train("b")
    assert refused.exit_code == 2 and "data.train: " in refused.output, refused.output
    edited = (tmp_path / "a" / "blur.yaml").read_text().replace("std_hu: [5.0, 25.0]", "std_hu: [5.0, 50.0]")
    assert edited != (tmp_path / "a" / "blur.yaml").read_text()
    (tmp_path / "a" / "blur.yaml").write_text(edited)
    refused = train("a")
    assert refused.exit_code == 2, refused.output
    assert (
        "other settings (degradation: {'noise.std_hu': [5.0, 25.0]} -> {'noise.std_hu': [5.0, 50.0]})"
        in refused.output
    )
    (tmp_path / "a" / "blur.yaml").write_text((tmp_path / "b" / "blur.yaml").read_text())
    assert train("a").exit_code == 0  # as it started: resumes (the run is done, nothing to train)


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("pretrain.learning_rate=.nan", "pretrain.learning_rate: expected a finite number, got nan"),
        ("data.patch_size=.inf", "data.patch_size: expected a finite number, got inf"),
        ("losses.perceptual.weight=-.inf", "losses.perceptual.weight: expected a finite number, got -inf"),
        ("seed=99999999999999999999", "seed: must lie in 0..4294967295"),
        ("degradation=mr", "degradation: the mr preset simulates MR acquisitions, and modality is CT"),
    ],
)
def test_config_values_no_run_can_use_are_refused_at_load(tmp_path, setting, says):
    """NaN learning rates and infinite sizes went through validation and ended in internal errors
    (or in a diverged GAN phase after a whole pre-training); the MR preset under modality CT
    trained a "CT" model on percentile-normalised data."""
    output = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", str(TINY), "--set", f"output_dir={output}", "--set", setting])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and says in line, line
    assert not output.exists()


@pytest.mark.parametrize(
    ("layers", "patch", "says"),
    [
        ("{relu5_4: 1.0}", 8, "8 is too small for the perceptual loss's relu5_4, which VGG19 reaches after "
         "halving the patch 4 times; use at least 16"),
        ("{relu1_1: 1.0, pool5: 0.5}", 16, "16 is too small for the perceptual loss's pool5"),
    ],
)  # fmt: skip
def test_a_patch_the_vgg_halves_to_nothing_is_refused_at_load(tmp_path, layers, patch, says):
    """An 8-pixel patch with relu5_4 trained the whole phase 1, wrote its model, then ended in an
    internal error (VGG's pooling of a 1x1 map) with a partial run left behind."""
    output = tmp_path / "run"
    sets = [f"output_dir={output}", f"data.patch_size={patch}", f"losses.perceptual.layer_weights={layers}"]
    result = CliRunner().invoke(app, ["train", str(TINY), *[w for s in sets for w in ("--set", s)]])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: {TINY}: data.patch_size: {says}"), line
    assert not output.exists()
    pretrain_only = [*sets, "gan.steps=0", "pretrain.steps=1", "data.validation=[]"]  # no VGG: any patch
    result = CliRunner().invoke(app, ["train", str(TINY), *[w for s in pretrain_only for w in ("--set", s)]])
    assert result.exit_code == 0, result.output


def test_an_unusable_vgg_file_is_said_in_one_line_before_the_data_loads(tmp_path):
    """A text file, another network's state dict or a truncated file given as the VGG19 weights
    ended in "internal error (KeyError: 101)" or a screen of missing keys, after the data loaded.
    The path is read relative to the config's folder, as data paths are."""
    import torch

    configs = tmp_path / "configs"
    configs.mkdir()
    config = configs / "tiny.yaml"
    config.write_text(TINY.read_text())  # its scans are examples, no paths
    torch.save({"features.0.weight": torch.zeros(3)}, configs / "other.pth")
    (configs / "notes.txt").write_text("not weights")
    torch.save(vgg19_features().state_dict(), tmp_path / "whole.pth")
    (configs / "cut.pth").write_bytes((tmp_path / "whole.pth").read_bytes()[:100])
    cases = {
        "notes.txt": "notes.txt: not a VGG19 weights file torch can read (",
        "other.pth": "other.pth: not torchvision's VGG19 (features.0.weight missing or of another shape; "
        "32 of its 32 convolution tensors differ)",
        "cut.pth": "cut.pth: not a VGG19 weights file torch can read (",
    }
    for name, says in cases.items():
        output = tmp_path / f"run-{name}"
        sets = [f"output_dir={output}", f"losses.perceptual.weights={name}", "data.train=[/nonexistent.nii]"]
        result = CliRunner().invoke(app, ["train", str(config), *[w for s in sets for w in ("--set", s)]])
        assert result.exit_code == 2, result.output
        (line,) = result.output.strip().splitlines()
        assert line.startswith(f"error: {configs / says}"), line  # said before the missing scan
        assert not output.exists()


def test_home_and_config_relative_paths_are_read_as_documented(tmp_path, monkeypatch):
    """output_dir=~/run made a folder named ``~`` in the current one (while printing ~/run), and
    data.cache_dir was read from the current folder, not beside the config as data paths are."""
    home, here, configs = tmp_path / "home", tmp_path / "here", tmp_path / "configs"
    for folder in (home, here, configs):
        folder.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(here)
    (configs / "tiny.yaml").write_text(TINY.read_text())  # its scans are examples, no paths
    sets = [
        "output_dir=~/run",
        "data.cache=disk",
        "data.cache_dir=mycache",
        "pretrain.steps=1",
        "gan.steps=0",
    ]
    result = CliRunner().invoke(
        app, ["train", str(configs / "tiny.yaml"), "-q", *[w for s in sets for w in ("--set", s)]]
    )
    assert result.exit_code == 0, result.output
    assert (home / "run" / "models" / "tiny-ct-x2-srresnet.safetensors").is_file()
    assert list((home / "run" / "checkpoints").glob("step-*.json"))
    assert list((configs / "mycache").iterdir()) and not list(here.iterdir())


def test_a_diverging_run_says_each_restore_once_then_stops(tmp_path):
    """Each restore was printed twice, as a warning and again as a progress note."""
    sets = [f"output_dir={tmp_path / 'run'}", "pretrain.learning_rate=1e30", "gan.steps=0"]
    result = CliRunner().invoke(app, ["train", str(TINY), "-q", *[w for s in sets for w in ("--set", s)]])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    restored = "warning: pretrain steps 1-5: non-finite loss; the state of step 0 restored"
    assert lines.count(restored) == 3 and len(lines) == 4, lines
    assert lines[-1].startswith("error: pretrain step 5: losses are not finite again after 3 restores")


def test_a_disk_cache_folder_blocked_by_a_file_is_said_as_the_settings_problem(tmp_path):
    """It read "error: base.yaml: File exists (EEXIST)", naming the config, not the cache folder."""
    blocker = tmp_path / "cache"
    blocker.write_text("a file")
    sets = [f"output_dir={tmp_path / 'run'}", "data.cache=disk", f"data.cache_dir={blocker}"]
    result = CliRunner().invoke(app, ["train", str(TINY), *[w for s in sets for w in ("--set", s)]])
    assert result.exit_code == 2, result.output
    assert (
        result.output.strip()
        == f"error: data.cache_dir: cannot use {blocker} as a folder: File exists (EEXIST)"
    )
    assert not (tmp_path / "run").exists()


def test_a_dicom_of_another_modality_than_the_config_is_refused(tmp_path):
    """The config's modality overrode the DICOM tag: an MR file was normalised in the CT window
    and listed as training data of a CT model."""
    output = tmp_path / "run"
    mixed = "data.train=[example:ct-small,example:mr-small]"
    result = CliRunner().invoke(app, ["train", str(TINY), "--set", f"output_dir={output}", "--set", mixed])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "MR_small.dcm: its DICOM Modality is MR, and the scans are loaded as CT" in line, line


@pytest.mark.parametrize("below", ["", "run"])
def test_output_dir_that_cannot_be_a_folder_stops_before_loading(tmp_path, below):
    taken = tmp_path / "notes.txt"
    taken.write_text("a file")
    before = sorted(tmp_path.rglob("*"))
    result = CliRunner().invoke(app, ["train", str(TINY), "--set", f"output_dir={taken / below}"])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: output_dir: {taken} is a file, not a folder"
    assert sorted(tmp_path.rglob("*")) == before and taken.read_text() == "a file"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_gloo_ddp_keeps_the_ranks_identical(tmp_path):
    output = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        str(REPO / "tests" / "ddp_worker.py"), str(TINY), str(output),
        "pretrain.steps=6", "gan.steps=4", "checkpoint.every=3",
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    first, second = (load_file(str(output / f"rank{r}.safetensors")) for r in (0, 1))
    # The ranks trained on different patches...
    assert not torch.equal(first.pop("sampler_state"), second.pop("sampler_state"))
    # ...and DDP kept every weight and BatchNorm statistic identical.
    assert first.keys() == second.keys()
    assert [k for k in first if not torch.equal(first[k], second[k])] == []
    sidecar = json.loads(sorted((output / "checkpoints").glob("*.json"))[-1].read_text())
    assert sidecar["world_size"] == 2
    # The logged loss is the mean over both ranks (it was rank 0's alone).
    own = [json.loads((output / f"rank{r}.json").read_text())["pixel_losses"] for r in (0, 1)]
    logged = json.loads((output / "rank0.json").read_text())["history"]
    (at_5,) = [h["loss/pixel"] for h in logged if h["phase"] == "pretrain" and h["step"] == 5]
    assert own[0][:5] != own[1][:5]
    assert at_5 == pytest.approx((sum(own[0][:5]) + sum(own[1][:5])) / 10, rel=1e-6)
    # Resuming with another number of processes is refused before any data is loaded.
    sets = ["pretrain.steps=6", "gan.steps=4", "checkpoint.every=3", f"output_dir={output}"]
    refused = CliRunner().invoke(app, ["train", str(TINY), *[w for s in sets for w in ("--set", s)]])
    assert refused.exit_code == 2, refused.output
    (line,) = refused.output.strip().splitlines()
    assert "written by 2 process(es); resume with the same number (now 1)" in line, line


def test_a_bad_validation_scan_under_ddp_is_said_by_every_rank_in_one_line(tmp_path):
    """Only rank 0 loads the validation scans: it gave the one-line error, and rank 1 an internal
    error from DDP's first broadcast (connection closed by peer)."""
    bad = tmp_path / "bad.nii.gz"
    bad.write_text("not a scan")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "srgan_med", "train", str(TINY), "-q", "--set", f"output_dir={tmp_path / 'run'}",
        "--set", f"data.validation=[{bad}]",
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    said = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert sorted(said) == sorted(
        [
            f"error: {bad}: not a readable NIfTI file (File {bad} is not a gzip file)",
            "error: rank 1: stopped, another rank could not load its data (its error says why)",
        ]
    ), run.stderr[-3000:]
    assert "internal error" not in run.stderr  # (torchrun's own launcher prints a traceback of its own)


def test_adversarial_and_pixel_losses():
    loss = AdversarialLoss(weight=1e-3)
    logits = torch.tensor([[3.0], [-2.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.ones(2, 1))
    torch.testing.assert_close(loss(logits, target_is_real=True), 1e-3 * expected)
    torch.testing.assert_close(loss(logits, target_is_real=True, for_discriminator=True), expected)
    assert loss(torch.full((4, 1), -30.0), target_is_real=False, for_discriminator=True) < 1e-6
    assert pixel_loss("l1")(torch.zeros(2), torch.ones(2)) == 1.0
    assert pixel_loss("mse")(torch.zeros(2), torch.full((2,), 2.0)) == 4.0


def test_bf16_and_channels_last_switches_train_the_same_function(tmp_path):
    """The GPU speed switches also run on CPU: the first step's losses match fp32 NCHW closely."""
    runs = {}
    variants = {
        "plain": ["performance.bf16=false", "performance.channels_last=false"],
        "fast": ["performance.bf16=true", "performance.channels_last=true"],
    }
    for name, switches in variants.items():
        config = tiny(
            tmp_path / name,
            "pretrain.steps=2",
            "gan.steps=2",
            "logging.every=1",
            "data.validation=[]",
            *switches,
        )
        runs[name] = Trainer(config, quiet=True).run().history
    for plain, fast in zip(runs["plain"], runs["fast"], strict=True):
        for key in ("loss/pixel", "loss/content", "loss/discriminator"):
            if key in plain:
                assert fast[key] == pytest.approx(plain[key], rel=0.05), (plain["phase"], plain["step"], key)


def _limit_file_size(limit: int):
    import resource

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX resource limits")
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], "checkpoints/step-0000010.safetensors: cannot write it: File too large (EFBIG)"),
        (
            ["checkpoint.every=1000"],
            "tensorboard: cannot write the TensorBoard log: File too large (EFBIG); training stopped",
        ),
    ],
    ids=["checkpoint", "tensorboard"],
)
def test_full_disk_during_training_is_one_line_error(tmp_path, overrides, expected):
    """A real write failure (RLIMIT_FSIZE) of a checkpoint (safetensors reports it as its own error
    type) or of the TensorBoard log (written by a background thread) ends training with one line."""
    run = tmp_path / "run"
    sets = [item for o in [f"output_dir={run}", *overrides] for item in ("--set", o)]
    result = subprocess.run(
        [sys.executable, "-m", "srgan_med", "train", str(TINY), *sets, "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_file_size(2000),
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"{run}/{expected}" in errors[0], result.stderr
    assert list_checkpoints(run / "checkpoints") == []  # no partial checkpoint is taken for one
    assert not [p for p in run.rglob("*") if ".partial" in p.name]
