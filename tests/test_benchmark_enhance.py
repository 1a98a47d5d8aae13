"""The enhance benchmarks run end to end on a tiny volume and model, and report what they promise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import load_benchmark

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_speed_benchmark_reports_rows_ratio_and_flops(tmp_path):
    speed = load_benchmark("enhance_speed")
    tiny = ["--slices", "3", "--size", "24", "--blocks", "1", "--width", "8", "--scale", "2"]
    report = speed.main([*tiny, "--repeats", "2", "--bf16-slices", "1", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "enhance_speed.json").read_text())
    assert saved["rows"] == report["rows"]
    figures = {row["figure"]: row for row in report["rows"]}
    engine = figures["enhance engine (CPU path of srgan-med enhance)"]
    strict = figures["enhance engine, strict fp32 (--precision fp32)"]
    assert strict["ratio_vs_baseline"] > 0 and strict["max_abs_diff_vs_baseline_hu"] < 0.05  # exact rewrites
    bound = 0.05 if engine["precision"] == "fp32" else 10.0  # mixed: the trunk in bf16 (random weights)
    assert engine["ratio_vs_baseline"] > 0 and engine["max_abs_diff_vs_baseline_hu"] < bound
    assert len(report["rounds"]) == 2
    shift_sum = figures["enhance engine, output convolution as 'shift-sum' (default 'conv')"]
    assert shift_sum["time_vs_default_engine"] > 0 and shift_sum["max_abs_diff_vs_baseline_hu"] < bound
    assert all(r["engine_shift-sum_s"] > 0 for r in report["rounds"])  # timed in every round
    assert any(name.startswith("not used: bf16") for name in figures)
    assert report["flops_per_slice"] > 0 and engine["gflop_per_s"] > 0
    gpu_rows = [name for name in figures if name.startswith("GPU")]
    assert bool(gpu_rows) == torch.cuda.is_available()  # GPU rows only where CUDA exists
    markdown = (tmp_path / "enhance_speed.md").read_text()
    assert "randomly initialised" in markdown and "command: `python" in markdown


@pytest.mark.slow  # two fresh commands and an inductor compile: ~25 s on 2 cores
def test_speed_benchmark_gpu_rows_run_through_on_the_cpu(tmp_path):
    """The GPU rows' code (engine per precision, as enhance runs it, compiled as enhance --compile
    runs it, enhance end to end in process and as fresh commands) on the CPU: a mistake in it would
    otherwise first show on a lent GPU's time. Skipped where CUDA exists (the rows then run there)."""
    from srgan_med.enhance.inference import compile_problem

    if torch.cuda.is_available():
        pytest.skip("CUDA is here: the GPU rows run on it")
    problem = compile_problem("cpu")
    if problem:
        pytest.skip(f"torch.compile cannot build kernels on this CPU: {problem}")
    speed = load_benchmark("enhance_speed")
    tiny = ["--slices", "5", "--size", "24", "--blocks", "1", "--width", "8", "--scale", "2"]
    argv = [*tiny, "--skip-cpu", "--gpu-rows-on-cpu", "--compile", "--cuda-batch-size", "2"]
    report = speed.main([*argv, "--out", str(tmp_path)])
    rows = {row["figure"]: row for row in report["rows"]}
    assert all(row["device"].startswith("CPU (smoke run") for row in rows.values())
    precision = rows["srgan-med enhance end to end on CUDA, in process (first call)"]["precision"]
    as_enhance = f"GPU engine as srgan-med enhance runs it ({precision}, output conv conv), batch 2"
    compiled = as_enhance.replace("enhance", "enhance --compile", 1)
    assert rows[compiled]["max_abs_diff_vs_gpu_baseline_hu"] < 10 and rows[as_enhance]["slices_per_s"] > 0
    for name in ("fp32", "tf32"):  # exact rewrites of the baseline
        assert rows[f"GPU engine {name}, batch 2"]["max_abs_diff_vs_gpu_baseline_hu"] < 0.05
    for option in ("", " --compile"):
        for attempt in ("first", "second"):
            assert (
                rows[f"srgan-med enhance{option} end to end on CUDA, in process ({attempt} call)"]["seconds"]
                > 0
            )
    for benchmark in (True, False):
        fresh = rows[f"srgan-med enhance end to end on CUDA, fresh command, cudnn.benchmark {benchmark}"]
        assert set(fresh["in_command_stages"]) == {"load", "upscale", "write"}
    assert rows["torch.compile warm-up (s)"]["seconds"] > 0


def test_flop_count_of_one_convolution():
    speed = load_benchmark("enhance_speed")
    conv = torch.nn.Conv2d(1, 4, 3, padding=1, bias=False)
    assert speed.flops_per_slice(conv, 10, 12) == 2 * 9 * 4 * 10 * 12  # multiply-adds x 2


def test_memory_benchmark_holds_the_whole_volume_but_runs_few_real_slices(tmp_path):
    memory = load_benchmark("enhance_memory")
    report = memory.main(
        [
            "--shape",
            "48",
            "40",
            "12",
            "--slices",
            "3",
            "--blocks",
            "1",
            "--width",
            "8",
            "--out",
            str(tmp_path),
        ]
    )
    assert report["settings"]["real_slices"] == 3
    assert report["output_float32_bytes"] == 96 * 80 * 12 * 4
    assert report["output_file_bytes"] > 96 * 80 * 12 * 2  # int16 output, all slices written
    assert report["peak_rss_bytes"] >= report["rss_before_bytes"] > 0
    assert (tmp_path / "enhance_memory.md").read_text().count("|") > 10


def test_gpu_inference_benchmark_checks_precisions_and_skips_throughput_without_cuda(tmp_path, monkeypatch):
    """On CPU: the throughput part is skipped with its reason; the precision part scores every shipped
    model of the example scans' modality in each CPU precision, saving the report after each (a run cut
    short keeps its rows); the JSON renders back to Markdown."""
    bench = load_benchmark("gpu_inference")
    saved, write_report = [], bench.write_report
    monkeypatch.setattr(
        bench, "write_report", lambda r, out: saved.append(len(r["precision"])) or write_report(r, out)
    )
    argv = ["--out", str(tmp_path), "--scans", str(tmp_path / "none"), "--max-slices", "1"]
    argv += ["--compile", "--compile-backend", "eager", "--compile-modes", "default", "triton-convs"]
    report = bench.main(argv)
    assert saved == [1, 2, 3, 4, 4]  # after each scan x model, and at the end
    if not torch.cuda.is_available():
        assert report["throughput_skipped"] == "no CUDA device"
    rows = report["precision"]
    assert {row["scan"] for row in rows} == {"example:ct-small", "example:mr-small"}
    assert {row["model"] for row in rows} == {"ct-x2", "ct-x4", "mr-x2", "mr-x4"}
    for row in rows:
        assert row["psnr_fp32"] > 15 and abs(row["delta_bf16_db"]) < 0.05  # bf16 close, not equal
        assert row["delta_bf16_db"] == round(row["psnr_bf16"] - row["psnr_fp32"], 4)
    summary = report["precision_summary"]["bf16"]
    assert summary["max_abs_delta_db"] == max(abs(row["delta_bf16_db"]) for row in rows)
    compiled = [
        "bf16 compiled",
        "bf16 fused-shift-sum compiled",
        "bf16 fused-shift-sum compiled triton-convs",
        "mixed compiled",
    ]
    for label in compiled:  # traced only (the eager backend): the eager variants' own numbers
        assert report["precision_summary"][label]["max_abs_delta_db"] is not None
        assert all(f"error_{label}" not in row for row in rows)
    for row in rows:  # traced, not recompiled: each computes what its eager variant does
        assert row["psnr_bf16 compiled"] == row["psnr_bf16"]
        assert row["psnr_mixed compiled"] == row["psnr_mixed"]
        assert row["psnr_bf16 fused-shift-sum compiled triton-convs"] == row["psnr_bf16 fused-shift-sum"]

    render = load_benchmark("render_reports")
    (markdown,) = render.main([str(tmp_path), str(tmp_path / "rendered")])
    assert markdown.read_text() == (tmp_path / "gpu_inference.md").read_text()

    only = bench.main([*argv[:6], "--out", str(tmp_path / "only"), "--variants", "bf16 fused-shift-sum"])
    for row in only["precision"]:  # fp32 (the reference) and the variant asked for
        assert {k for k in row if k.startswith("psnr_")} == {"psnr_fp32", "psnr_bf16 fused-shift-sum"}


def test_kernel_profile_names_where_a_pass_spends_its_time(tmp_path):
    """On CPU the profile lists operators (kernels on CUDA); the convolutions dominate a generator."""
    from srgan_med.enhance.inference import prepare_for_inference
    from srgan_med.nets import SRResNet

    bench = load_benchmark("gpu_inference")
    torch.manual_seed(0)
    engine = prepare_for_inference(SRResNet(scale=2, blocks=2, width=16), "cpu", precision="fp32")
    example = torch.rand(4, 1, 32, 32)
    with torch.inference_mode():
        profile = bench.kernel_profile(lambda: engine(example), "cpu", passes=2, top=5)
    assert profile["kind"] == "CPU operators" and profile["passes"] == 2 and len(profile["rows"]) == 5
    times = [row["us_per_pass"] for row in profile["rows"]]
    assert times == sorted(times, reverse=True) and times[0] > 0
    assert any("conv" in row["name"] for row in profile["rows"])
    assert float(profile["convolution_share"].rstrip("%")) > 50
    report = {
        "environment": bench.environment() | {"command": "test"},
        "device": "CPU",
        "precision": [],
        "throughput": {"flops_per_slice": 1e9, "ceilings": {}, "rows": [], "profiles": {"eager": profile}},
    }
    _, markdown = bench.write_report(report, tmp_path)
    text = markdown.read_text()
    assert "### where the time goes: eager (CPU operators" in text and profile["rows"][0]["name"] in text


def test_convolution_share_leaves_out_fused_pointwise_and_layout_kernels():
    """Kernel names as an H100 profile of the compiled engine listed them (2026-11-26)."""
    bench = load_benchmark("enhance_common")
    convolutions = [
        "sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize256x64x32_warpgro",
        "void implicit_convolve_sgemm<__nv_bfloat16, __nv_bfloat16, 1024, 5, 5, 3, 3, 3, 1, false,",
        "void cutlass__5x_cudnn::Kernel<cutlass_tensorop_bf16_s16816dgrad_optimized_bf16_256x64_32x",
        "triton_tem_fused__to_copy_convolution_2",
        "aten::mkldnn_convolution",
    ]
    others = [
        "triton_poi_fused__prelu_kernel__to_copy_add_convolution_view_6",
        "triton_per_fused_convolution_mean_3",
        "void nhwcAddPaddingKernel<__nv_bfloat16, __nv_bfloat16, float, true, (cudnnKernelDataType_",
        "void cudnn::engines_precompiled::nchwToNhwcKernel<__nv_bfloat16, __nv_bfloat16, float, fal",
        "void at::native::vectorized_elementwise_kernel<8, at::native::CUDAFunctor_add<c10::BFloat1",
    ]
    assert all(bench.is_convolution_kernel(name) for name in convolutions)
    assert not any(bench.is_convolution_kernel(name) for name in others)


def test_overhead_benchmark_times_every_stage_of_the_real_path(tmp_path):
    overhead = load_benchmark("enhance_overhead")
    report = overhead.main(
        ["--shape", "16", "12", "10", "--scale", "2", "--repeats", "2", "--out", str(tmp_path)]
    )
    saved = json.loads((tmp_path / "enhance_overhead.json").read_text())
    assert saved["median_seconds"] == report["median_seconds"]
    assert len(report["runs"]) == 2 and report["batch_size"] >= 1
    for run in report["runs"]:
        assert all(run[stage] >= 0 for stage in overhead.STAGES)
        assert run["upscaler"] > 0 and run["engine_own"] == pytest.approx(run["engine"] - run["upscaler"])
        assert run["total"] >= run["load"] + run["engine"] + run["save"] - 1e-6
    assert report["written_bytes"] == 352 + 32 * 24 * 10 * 2  # NIfTI-1 header + the int16 voxels
    assert "network: bilinear" in (tmp_path / "enhance_overhead.md").read_text()


def test_overhead_benchmark_times_each_way_of_clamping(tmp_path):
    """``--clip`` picks how the engine clamps (forced: every batch counted and clamped); the report
    says which ran."""
    overhead = load_benchmark("enhance_overhead")
    for clip in ("input", "forced", "none"):
        out = tmp_path / clip
        args = ["--shape", "16", "12", "4", "--scale", "2", "--repeats", "1", "--clip", clip]
        report = overhead.main([*args, "--out", str(out)])
        assert report["clip"] == clip and report["median_seconds"]["engine"] > 0
        assert f"output clamping: {clip}" in (out / "enhance_overhead.md").read_text()


def test_overhead_benchmark_reads_and_writes_dicom_series(tmp_path):
    overhead = load_benchmark("enhance_overhead")
    args = ["--shape", "16", "12", "3", "--scale", "2", "--repeats", "1", "--format", "dicom"]
    report = overhead.main([*args, "--out", str(tmp_path)])
    assert report["format"] == "dicom" and report["median_seconds"]["save"] > 0
    assert report["written_bytes"] > 3 * 32 * 24 * 2  # three DICOM files: headers + int16 pixels


def test_precision_summary_fails_a_variant_that_failed_on_any_pair():
    """A variant whose run raised on some scan (``error_<label>``) is not within the bar, however
    small its deltas elsewhere; one that never ran has no delta at all."""
    bench = load_benchmark("gpu_inference")
    rows = [
        {"delta_bf16_db": 0.004, "delta_fused_db": 0.001},
        {"delta_bf16_db": -0.006, "error_fused": "RuntimeError: no kernel"},
        {"delta_bf16_db": 0.002, "error_broken": "RuntimeError: no kernel"},
    ]
    summary = bench.precision_summary(rows)
    assert summary["bf16"] == {"max_abs_delta_db": 0.006, "within_0.01_db": True}
    assert summary["fused"] == {"max_abs_delta_db": 0.001, "within_0.01_db": False, "failed_pairs": 1}
    assert summary["broken"] == {"max_abs_delta_db": None, "within_0.01_db": False, "failed_pairs": 1}


def test_compile_plan_puts_every_form_in_the_first_setting_and_the_default_in_the_rest():
    """The compiled rows: every conv form (the CUDA default first) and the plain engine in the first
    setting; only the default form and the plain engine in each further one, whose compile
    (max-autotune's) takes a minute each. Names map to ``torch.compile`` arguments."""
    bench = load_benchmark("gpu_inference")
    forms = list(bench.CONV_FORMS)
    plan = bench.compile_plan(forms, ["default", "triton-convs"])
    most = f"bf16 {forms[-1]}"
    assert forms[-1] == "fused-shift-sum output convolution"  # prepare_for_inference's CUDA bf16 default
    first = [(f"bf16 {form}", "default") for form in reversed(forms)] + [("bf16", "default")]
    assert plan == [*first, (most, "triton-convs"), ("bf16", "triton-convs")]
    assert bench.compile_plan([], ["default", "reduce-overhead"]) == [
        ("bf16", "default"),
        ("bf16", "reduce-overhead"),
    ]
    assert bench.compile_kwargs("reduce-overhead") == {"mode": "reduce-overhead"}
    options = bench.compile_kwargs("triton-convs")["options"]
    assert options["max_autotune_conv_backends"] == "TRITON"
    known = torch._inductor.config.get_config_copy()  # options torch.compile would reject otherwise
    assert set(options) <= set(known)
    assert bench.compile_label("default") == "torch.compile(mode='default')"
    assert bench.compile_label("triton-convs") == "torch.compile(triton-convs)"
    args = bench.parse_args(
        ["--out", "x", "--compile-modes", "triton-convs", "--compile-batches", "32", "256"]
    )
    assert args.compile_modes == ["triton-convs"] and args.compile_batches == [32, 256]


def forms_eager(rows, bench):
    return [
        row
        for row in rows
        if row["variant"].removeprefix("engine bf16 + channels_last, ") in bench.CONV_FORMS
    ]


def test_gpu_inference_throughput_part_runs_through_on_the_cpu(tmp_path):
    """The throughput part's whole control flow (baseline, precisions, batches, the conv forms, the
    compile plan at two batches, profiles, the report) on a tiny generator on the CPU, with a
    trace-only compile backend: a mistake in it would otherwise first show on a lent GPU's time."""
    bench = load_benchmark("gpu_inference")
    argv = ["--out", str(tmp_path), "--device", "cpu", "--size", "12", "--blocks", "1", "--width", "8"]
    argv += ["--batch", "3", "--batches", "1", "2", "--repeats", "2", "--warmup", "1", "--profile"]
    argv += ["--compile", "--compile-backend", "eager", "--compile-modes", "default", "reduce-overhead"]
    argv += ["--compile-batches", "1", "2", "--skip-precision"]
    report = bench.main(argv)
    part = report["throughput"]
    assert report["device"] == "CPU" and part["generator"] == {
        "scale": 4,
        "blocks": 1,
        "width": 8,
        "slice": 12,
    }
    rows = part["rows"]
    timed = [row for row in rows if "slices_per_s" in row]
    assert [row for row in rows if "skipped" in row] == [
        {"variant": "engine bf16 + channels_last, CUDA graph", "skipped": "RuntimeError: needs a CUDA device"}
    ]
    compiled = [row for row in timed if "torch.compile" in row["variant"]]
    plan = bench.compile_plan(list(bench.CONV_FORMS), ["default", "reduce-overhead"])
    assert len(compiled) == 2 * len(plan)  # every planned engine and setting, at both batches
    assert all(row["variant"].endswith("backend 'eager'") for row in compiled)
    assert {row["batch"] for row in compiled} == {1, 2}
    eager = [row for row in timed if row["variant"] == "engine bf16 + channels_last, cudnn.benchmark"]
    best = max(eager, key=lambda row: row["slices_per_s"])["batch"]  # never the mixed row's 3
    assert {row["batch"] for row in forms_eager(timed, bench)} == {best}
    forms = [row for row in timed if any(form in row["variant"] for form in bench.CONV_FORMS)]
    # each form eager and compiled in the first setting at 2 batches; the default one in the second
    assert len(forms) == len(bench.CONV_FORMS) * 3 + 2
    for row in timed[1:]:  # the same function as strict fp32, up to bf16 rounding
        assert float(row["rel_error_vs_fp32"]) < 2e-2, row
        assert row["ratio_vs_baseline"] > 0 and row["meets_issue7_target"] in (True, False)
    assert any(
        name.endswith("torch.compile(mode='reduce-overhead'), backend 'eager'") for name in part["profiles"]
    )
    text = (tmp_path / "gpu_inference.md").read_text()
    assert "x4 SRResNet (1 blocks, 8 channels), 12x12 slices" in text

    plots = load_benchmark("plot_reports")  # the figure shows the report's timed rows, and nothing else
    (figure,) = plots.main([str(tmp_path), str(tmp_path / "figures")])
    assert figure == tmp_path / "figures" / "gpu_inference.png" and figure.stat().st_size > 10_000
    bars = plots.panels(report)["inference"]
    assert [value for _, value in bars] == [row["slices_per_s"] for row in timed]
    assert bars[0][0] == "baseline: plain generator, fp32 eager NCHW, torch defaults, batch 1"


def test_merge_precision_gathers_rows_from_a_cut_run_log_and_a_report(tmp_path):
    """The H100 run of 2026-11-26 (11:42Z) was cut by its time limit after 15 of 18 rows, which are
    in its log only; a second run measured the example scans. Merged: 18 pairs, the later source's
    row where both have one, and the summary computed from the rows."""
    merge = load_benchmark("merge_precision")
    results = BENCHMARKS.parent / "docs" / "results" / "h100-2026-11-26-forms"
    log, examples = results / "session_1.log", results / "gpu_inference_precision_examples.json"
    report = merge.main([str(tmp_path), str(log), str(examples)])
    rows = report["precision"]
    assert len(rows) == 18 and len({(row["scan"], row["model"]) for row in rows}) == 18
    later = json.loads(examples.read_text())["precision"]
    assert [row for row in rows if row["scan"].startswith("example:")] == later
    for label, summary in report["precision_summary"].items():
        worst = max(abs(row[f"delta_{label}_db"]) for row in rows)
        assert summary == {"max_abs_delta_db": worst, "within_0.01_db": worst <= 0.01}
    assert report["device"] == "NVIDIA H100 80GB HBM3"
    assert report["environment"]["measured_by"].startswith("python benchmarks/gpu_inference.py")
    assert (
        report["environment"]["command"]
        == f"python benchmarks/merge_precision.py {tmp_path} {log} {examples}"
    )
    saved = json.loads((tmp_path / "gpu_inference_precision.json").read_text())
    assert saved["precision"] == rows
    with pytest.raises(SystemExit, match="at least one gpu_inference.json"):
        merge.main([str(tmp_path), str(log)])


def test_gpu_inference_runs_a_shipped_name_with_other_weights_and_says_which(tmp_path):
    """``--weights NAME=PATH``: an earlier version of a model measured under its name, its file's
    digest in the report; a file that is not there is refused before any work."""
    import hashlib
    import shutil

    from srgan_med.models.bundle import shipped_models

    bench = load_benchmark("gpu_inference")
    weights = tmp_path / "earlier-mr-x2.safetensors"
    shutil.copy(shipped_models()["mr-x2"], weights)
    with open(weights, "r+b") as handle:  # other weights: the last bytes of the last tensor changed
        handle.seek(-64, 2)
        handle.write(bytes(64))
    argv = ["--out", str(tmp_path / "a"), "--scans", str(tmp_path / "none"), "--max-slices", "1"]
    argv += ["--skip-throughput", "--variants", "mixed"]
    plain = {row["model"]: row for row in bench.main(argv)["precision"]}
    argv[1] = str(tmp_path / "b")
    report = bench.main([*argv, "--weights", f"mr-x2={weights}"])
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert f"mr-x2 run with the weights {weights} (sha256 {digest})" in report["precision_settings"]
    replaced = {row["model"]: row for row in report["precision"]}
    assert replaced["mr-x2"]["psnr_fp32"] != plain["mr-x2"]["psnr_fp32"]
    assert replaced["mr-x4"] == plain["mr-x4"] and replaced["ct-x2"] == plain["ct-x2"]
    for wrong in (
        [f"mr-x2={tmp_path / 'missing.safetensors'}"],
        [f"mr_x2={weights}"],  # no such model: was reported as run
        [f"mr-x2={weights}", f"mr-x2={weights}"],  # the last won, both were reported
    ):
        with pytest.raises(SystemExit) as refused:
            bench.main([*argv, *[a for entry in wrong for a in ("--weights", entry)]])
        assert refused.value.code == 2
