"""benchmarks/train_speed.py runs end to end on CPU and reports what it promises, and the trainer's
speed switches (channels_last, torch.compile) compute the same training step as the plain path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import load_benchmark

from srgan_med.train import Trainer, load_train_config

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
SMALL_NETWORKS = [
    "--set", "generator.blocks=2", "--set", "generator.width=16", "--set", "discriminator.width=8",
    "--set", "losses.perceptual.layer_weights={relu2_2: 1.0}",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("train_speed")
    speed = load_benchmark("train_speed")
    quick = ["--device", "cpu", "--patch-size", "32", "--steps", "2", "--warmup", "1", "--slices", "4"]
    report = speed.main([*quick, "--batch-size", "2", "--batch-sizes", "3", "--threads", "1",
                         *SMALL_NETWORKS, "--profile", "--out", str(out)])  # fmt: skip
    return report, out


def test_cpu_smoke_run_writes_rows_with_positive_numbers(smoke_report):
    report, out = smoke_report
    assert json.loads((out / "train_speed.json").read_text())["rows"] == report["rows"]
    timed = [row for row in report["rows"] if "skipped" not in row]
    variants = {(row["phase"], row["variant"], row["batch"]) for row in timed}
    for phase in ("pretrain", "gan"):
        assert {(phase, "baseline: fp32 eager NCHW", 2), (phase, "channels_last", 2)} <= variants
        assert (phase, "channels_last, batch 3", 3) in variants  # CPU's best variant at --batch-sizes
        assert (phase, "channels_last, shift-sum output conv, batch 3", 3) in variants
    for row in timed:
        assert row["patches_per_s"] > 0 and row["tflop_per_s"] > 0 and row["ratio_vs_baseline"] > 0
        assert row["ms_per_step"] > 0 and row["data_ms_per_step"] > 0 and row["losses_finite"]
    baselines = [row for row in timed if row["variant"].startswith("baseline")]
    assert [row["ratio_vs_baseline"] for row in baselines] == [1.0, 1.0]


def test_figure_has_one_panel_per_phase_with_the_timed_rows(smoke_report, tmp_path):
    report, out = smoke_report
    plots = load_benchmark("plot_reports")
    (figure,) = plots.main([str(out), str(tmp_path)])
    assert figure.name == "train_speed.png" and figure.stat().st_size > 10_000
    bars = plots.panels(report)
    assert set(bars) == {"pretrain", "gan"}
    for phase, rows in bars.items():
        timed = [row for row in report["rows"] if row["phase"] == phase and row.get("patches_per_s")]
        assert [value for _, value in rows] == [row["patches_per_s"] for row in timed]
        labels = [label for label, _ in rows]  # each names its batch, once
        assert all(
            label.count(f"batch {row['batch']}") == 1 for label, row in zip(labels, timed, strict=True)
        )


def test_profile_of_each_row_shows_the_training_step_s_operators(smoke_report):
    report, out = smoke_report
    timed = [row for row in report["rows"] if "skipped" not in row]
    for row in timed:
        profile = row["profile"]
        assert profile["kind"] == "CPU operators" and profile["us_per_pass"] > 0
        names = {entry["name"] for entry in profile["rows"]}
        assert any("convolution" in name for name in names), names  # forward or backward convolutions
    markdown = (out / "train_speed.md").read_text()
    assert markdown.count("### where the time goes:") == 2  # the fastest row of each phase


def test_gpu_rows_are_skipped_on_cpu_with_a_reason(smoke_report):
    report, _ = smoke_report
    skipped = [row for row in report["rows"] if "skipped" in row]
    assert {row["variant"] for row in skipped} == {
        "bf16",
        "bf16 + channels_last",
        "bf16 + channels_last + compile",
        "bf16 + channels_last + compile(reduce-overhead)",
    }
    assert all("GPU-only" in row["skipped"] for row in skipped)


def test_rows_option_keeps_the_baseline_and_only_the_named_rows():
    import dataclasses

    speed = load_benchmark("train_speed")
    cuda = torch.device("cuda")  # only the device's type is read: no GPU needed
    chosen = speed.variants(cuda, 16, [128], True, ["compile_reduce_overhead", "batches", "shift_sum"])
    names = [(variant.name, variant.batch, variant.compile_mode) for variant, _ in chosen]
    assert names == [
        ("baseline: fp32 eager NCHW", 16, "default"),
        ("bf16 + channels_last + compile(reduce-overhead)", 16, "reduce-overhead"),
        ("bf16 + channels_last + compile, batch 128", 128, "default"),
        ("bf16 + channels_last + compile, shift-sum output conv, batch 128", 128, "default"),
    ]
    batch_row, shift_sum_row = chosen[-2][0], chosen[-1][0]
    assert dataclasses.astuple(batch_row)[2:] == (True, True, True, "default", "conv")
    assert dataclasses.astuple(shift_sum_row)[2:] == (True, True, True, "default", "shift-sum")
    assert "performance.compile_mode=reduce-overhead" in chosen[1][0].overrides()
    assert "performance.output_conv=shift-sum" in shift_sum_row.overrides()
    assert "performance.output_conv=conv" in chosen[0][0].overrides()  # the baseline stays naive


def test_flop_breakdown_adds_up_and_phase_two_holds_all_three_networks(smoke_report):
    report, _ = smoke_report
    pretrain, gan = report["flops_per_patch"]["pretrain"], report["flops_per_patch"]["gan"]
    for counts in (pretrain, gan):  # the blur's kernel length, so its FLOPs, varies with the draw
        assert abs(counts["unattributed"]) <= max(counts["degradation"], 1)
    assert set(pretrain) == {"degradation", "generator", "unattributed", "total"}
    assert gan["generator"] == pretrain["generator"]  # the same generator work in both phases
    assert gan["discriminator"] > 0 and gan["VGG19 content loss"] > 0
    assert gan["total"] == sum(v for k, v in gan.items() if k != "total")


def test_markdown_states_command_device_and_which_vgg(smoke_report):
    report, out = smoke_report
    markdown = (out / "train_speed.md").read_text()
    assert "command: `python benchmarks/train_speed.py --device cpu" in markdown
    assert f"torch {torch.__version__}" in markdown and report["environment"]["date"] in markdown
    vgg = "ImageNet VGG19" if report["settings"]["vgg19_weights"] == "imagenet" else "RANDOM-INIT VGG19"
    assert vgg in markdown and "GFLOP_per_patch" in markdown


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_rows_run_on_cuda(tmp_path):
    speed = load_benchmark("train_speed")
    quick = ["--device", "cuda", "--patch-size", "32", "--steps", "2", "--warmup", "1", "--no-compile"]
    report = speed.main(
        [*quick, "--batch-size", "4", "--batch-sizes", "8", *SMALL_NETWORKS, "--out", str(tmp_path)]
    )
    timed = {row["variant"]: row for row in report["rows"] if "skipped" not in row and row["phase"] == "gan"}
    assert {"bf16", "bf16 + channels_last", "bf16 + channels_last, batch 8"} <= set(timed)
    assert all(row["patches_per_s"] > 0 and row["peak_memory_gib"] > 0 for row in timed.values())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_steps_never_wait_for_the_gpu(tmp_path):
    """With CUDA's sync debug mode set to error, a warm phase-1 and phase-2 step (sampling, the
    degradation on the GPU, networks, losses, both optimisers) raises if anything reads the device."""
    speed = load_benchmark("train_speed")
    overrides = [f"output_dir={tmp_path}", "performance.device=cuda", "performance.deterministic=false"]
    trainer = Trainer(load_train_config(TINY, overrides), quiet=True)
    for phase in ("pretrain", "gan"):
        step = speed.start_phase(trainer, phase)
        step()  # first calls: cuDNN set-up, allocations
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert trainer.guard.all_finite()


def test_flop_count_of_phase_one_is_three_generator_forwards(tmp_path):
    """Backward costs two forwards per layer, minus the first conv's input gradient (not needed)."""
    speed = load_benchmark("train_speed")
    trainer = Trainer(load_train_config(TINY, [f"output_dir={tmp_path}", "gan.steps=0"]), quiet=True)
    flops = speed.count_flops(trainer, "pretrain")
    low_res, _ = trainer._batch()
    forward = speed._flops(lambda: trainer.generator(low_res))
    assert 2.9 * forward < flops["generator"] < 3.0 * forward


# ------------------------------------------------------------------- same function, faster path
def _bias_before_batch_norm(prefix: str, network: torch.nn.Module) -> set[str]:
    """Biases of convolutions that a BatchNorm follows, and that BatchNorm's running mean.

    Their gradient is zero in exact arithmetic (BatchNorm subtracts the batch mean), so it is float
    noise, and Adam's first steps (``lr * g / (|g| + eps)``) turn noise of either sign into moves of
    up to the learning rate: these entries can only agree to about the learning rate.
    """
    names = set()
    for name, module in network.named_modules():
        if isinstance(module, torch.nn.Sequential):
            for index in range(len(module) - 1):
                pair = module[index], module[index + 1]
                if isinstance(pair[0], torch.nn.Conv2d) and isinstance(pair[1], torch.nn.BatchNorm2d):
                    names.add(f"{prefix}.{name}.{index}.bias")
                    names.add(f"{prefix}.{name}.{index + 1}.running_mean")
    return names


def _one_step_each(tmp_path: Path, *overrides: str) -> tuple[dict, dict, set[str], float]:
    """Losses of one phase-1 then one phase-2 step, the weights and BN statistics after them, the
    entries with a zero true gradient (see above) and the sum of the two learning rates."""
    config = load_train_config(
        TINY,
        [f"output_dir={tmp_path}", "performance.cpu_threads=1", "data.batch_size=2", *overrides],
    )
    trainer = Trainer(config, quiet=True)
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        losses = {}
        for phase, step in (("pretrain", trainer._pretrain_step), ("gan", trainer._gan_step)):
            trainer.phase = phase
            trainer._new_optimisers(phase)
            result = step()
            assert result is not None
            losses.update({f"{phase}:{k}": v.item() for k, v in result.items()})
        state = {f"generator.{k}": v for k, v in trainer.generator.state_dict().items()}
        state.update({f"discriminator.{k}": v for k, v in trainer.discriminator.state_dict().items()})
        noise_only = _bias_before_batch_norm("generator", trainer.generator)
        noise_only |= _bias_before_batch_norm("discriminator", trainer.discriminator)
        return losses, state, noise_only, config.pretrain.learning_rate + config.gan.learning_rate
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _assert_same_step(plain: tuple, fast: tuple) -> None:
    (plain_losses, plain_state, noise_only, learning_rates), (fast_losses, fast_state, *_) = plain, fast
    assert plain_losses.keys() == fast_losses.keys() and plain_state.keys() == fast_state.keys()
    for name, value in plain_losses.items():
        assert fast_losses[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
    assert len(noise_only) > 10
    for name, value in plain_state.items():
        # Elsewhere too a few tiny gradients are amplified by Adam's first step, hence 5e-5 (of a
        # learning rate of 1e-3); a wrong layout or a missed conversion moves weights by far more.
        atol = 2 * learning_rates if name in noise_only else 5e-5
        torch.testing.assert_close(fast_state[name], value, rtol=1e-4, atol=atol, msg=name)


def test_channels_last_training_steps_equal_the_plain_ones(tmp_path):
    plain = _one_step_each(tmp_path / "plain", "performance.channels_last=false")
    fast = _one_step_each(tmp_path / "fast", "performance.channels_last=true")
    weight = "generator.body.0.body.0.weight"  # (16, 16, 3, 3): the two layouts differ
    assert fast[1][weight].is_contiguous(memory_format=torch.channels_last)
    assert plain[1][weight].is_contiguous()
    _assert_same_step(plain, fast)


def _compile_unavailable() -> str | None:
    from srgan_med.enhance.inference import compile_problem

    problem = compile_problem("cpu")
    return f"torch.compile does not work on this CPU: {problem}" if problem else None


@pytest.mark.slow  # inductor compiles both networks' forward and backward: ~90 s cold on 2 cores
def test_compiled_training_steps_equal_the_plain_ones(tmp_path):
    reason = _compile_unavailable()
    if reason:
        pytest.skip(reason)
    plain = _one_step_each(tmp_path / "plain", "performance.compile=false")
    fast = _one_step_each(tmp_path / "fast", "performance.compile=true")
    _assert_same_step(plain, fast)


@pytest.mark.parametrize("output_conv", ["conv", "shift-sum"])
def test_compiled_networks_are_traced_into_few_graphs(tmp_path, monkeypatch, output_conv):
    """Each graph torch.compile traces is compiled separately (seconds to minutes with inductor on a
    GPU), so a phase-2 step under bf16 must not feed the discriminator two input dtypes, and the
    shift-sum output convolution (a custom autograd function) must not break the generator's graph.
    Dynamo's tracing and guards are those of a real compile; only the graphs' backend is eager."""
    from collections import Counter

    graphs: Counter[str] = Counter()
    compile_ = torch.compile

    def counting_compile(model, mode=None, **kwargs):
        def backend(graph_module, example_inputs):
            graphs[type(model).__name__] += 1
            return graph_module.forward

        return compile_(model, backend=backend)

    monkeypatch.setattr(torch, "compile", counting_compile)
    overrides = ["data.batch_size=2", "performance.compile=true", "performance.bf16=true"]
    overrides.append(f"performance.output_conv={output_conv}")
    trainer = Trainer(load_train_config(TINY, [f"output_dir={tmp_path}", *overrides]), quiet=True)
    assert trainer.generator.output_conv == output_conv
    for phase, step in (("pretrain", trainer._pretrain_step), ("gan", trainer._gan_step)):
        trainer.phase = phase
        trainer._new_optimisers(phase)
        for _ in range(2):
            step()
    # the generator once; the discriminator with and without an input gradient; the VGG once
    assert dict(graphs) == {"SRResNet": 1, "Discriminator": 2, "PerceptualLoss": 1}
