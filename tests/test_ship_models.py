"""benchmarks/ship_models.py ships a trained model only when every measured comparison beats bicubic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_benchmark

from srgan_med.models.bundle import load_bundle
from srgan_med.train import Trainer, load_train_config

REPO = Path(__file__).resolve().parents[1]
ship_models = load_benchmark("ship_models")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    overrides = [f"output_dir={runs / 'tiny-ct-x2'}", "gan.steps=0", "pretrain.steps=5", "data.validation=[]"]
    Trainer(load_train_config(REPO / "configs" / "tiny.yaml", overrides), quiet=True).run()
    return runs


def _quality(tmp_path, gains) -> Path:
    # A hand-made report exercising the gate only: these numbers are not a measurement of anything.
    rows = [
        {
            "model": "tiny-ct-x2-srresnet",
            "scan": f"scan{i}",
            "family": "box",
            "region": "mask",
            "psnr_model": 30.0 + g,
            "psnr_bicubic": 30.0,
            "psnr_gain": g,
            "ssim_model": 0.9 + g / 100,
            "ssim_bicubic": 0.9,
            "ssim_gain": g / 100,
            "passed": g > 0,
        }  # fmt: skip
        for i, g in enumerate(gains)
    ]
    report = {"date": "d", "device": "cpu", "command": "python benchmarks/model_quality.py", "seed": 0}
    path = tmp_path / "quality.json"
    path.write_text(json.dumps({**report, "max_slices": 0, "rows": rows}))
    return path


def test_a_model_that_loses_anywhere_is_not_shipped(trained, tmp_path, capsys):
    out = tmp_path / "weights"
    code = ship_models.main(["tiny-ct-x2", "--runs", str(trained), "--out", str(out), "--quality",
                             str(_quality(tmp_path, [0.5, -0.1]))])  # fmt: skip
    assert code == 1
    assert "not shipped, 1 of 2 comparisons do not beat bicubic (scan1/box/mask)" in capsys.readouterr().out
    assert not list(out.glob("*"))


def test_a_passing_model_ships_with_its_card(trained, tmp_path):
    out = tmp_path / "weights"
    code = ship_models.main(["tiny-ct-x2", "--runs", str(trained), "--out", str(out), "--quality",
                             str(_quality(tmp_path, [0.5, 0.2]))])  # fmt: skip
    assert code == 0
    bundle = load_bundle(str(out / "tiny-ct-x2.safetensors"))
    assert bundle.scale == 2 and len(bundle.card["quality"]["rows"]) == 2
    assert bundle.card["recipe"] == "configs/shipped/tiny-ct-x2.yaml"
    card = (out / "tiny-ct-x2.md").read_text()
    assert "| scan1 | box | mask | 30.20 | 30.00 | +0.20 |" in card
    assert "CT_small.dcm" in card and "Known limits" in card
    # a report from before clamping existed carries no "clip": its scores were not clamped
    assert bundle.card["quality"]["clip"] is False and "scored as computed (not clamped)" in card


def test_the_card_says_when_the_scores_were_clamped(trained, tmp_path):
    quality = _quality(tmp_path, [0.5])
    quality.write_text(json.dumps({**json.loads(quality.read_text()), "clip": True}))
    out = tmp_path / "weights"
    code = ship_models.main(
        ["tiny-ct-x2", "--runs", str(trained), "--out", str(out), "--quality", str(quality)]
    )
    assert code == 0 and load_bundle(str(out / "tiny-ct-x2.safetensors")).card["quality"]["clip"] is True
    assert "Reconstructions clamped before scoring" in (out / "tiny-ct-x2.md").read_text()


def test_missing_candidate_or_report(trained, tmp_path):
    assert ship_models.main(["nope", "--runs", str(trained), "--quality", str(tmp_path / "none.json")]) == 2
    assert ship_models.main(["nope", "--runs", str(trained), "--out", str(tmp_path / "w"), "--quality",
                             str(_quality(tmp_path, [1.0]))]) == 1  # fmt: skip


def test_history_notes_follow_the_training_time_and_modality():
    """The card of a model retrained after a fix must not carry the note of the defect it no longer has."""
    ship = load_benchmark("ship_models")
    old = {"trained_on": "CPU (x86_64, 1 threads)", "trained_at": "2026-11-25T22:57:03Z"}
    new = {"trained_on": "CPU (x86_64, 1 threads)", "trained_at": "2026-12-07T00:51:31Z"}
    newest = {"trained_on": "CPU (x86_64, 1 threads)", "trained_at": "2026-12-07T04:00:00Z"}
    assert len(ship.history_notes(old, "MR")) == 3 and len(ship.history_notes(old, "CT")) == 1
    assert "sampled" in ship.history_notes(old, "CT")[0]
    (note,) = ship.history_notes(new, "MR")  # retrained after the normalisation fix, before the magnitude one
    assert "zero signal" in note and ship.history_notes(new, "CT") == []
    assert ship.history_notes(newest, "MR") == [] and ship.history_notes(newest, "CT") == []
