"""benchmarks/traffic.py: the byte counter counts what operators read and write, and the report adds up."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import load_benchmark


def _counted(traffic, function) -> tuple[int, int]:
    counter = traffic.ByteCounterMode()
    with counter:
        function()
    return counter.read, counter.written


def test_byte_counter_reads_inputs_writes_results_and_ignores_views():
    traffic = load_benchmark("traffic")
    a, b = torch.randn(1000), torch.randn(1000)
    state = [torch.zeros(1000), torch.zeros(1000)]
    step = torch.tensor(1.0)
    assert _counted(traffic, lambda: a + b) == (8000, 4000)
    assert _counted(traffic, lambda: a.add_(b)) == (8000, 4000)  # in place: self written once
    assert _counted(traffic, lambda: a.view(10, 100).t().detach()) == (0, 0)
    assert _counted(traffic, lambda: a.view(1, 1000).expand(10, 1000) * 2) == (4000, 40000)  # stride-0 read
    assert _counted(traffic, lambda: a.to(torch.bfloat16)) == (4000, 2000)
    assert _counted(traffic, lambda: a.float()) == (0, 0)  # no-op conversion
    adam = dict(amsgrad=False, lr=1e-3, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8, maximize=False)
    # a fused optimiser returns nothing: what it writes are its mutable arguments
    read, written = _counted(
        traffic, lambda: torch._fused_adam_([a], [b], *([s] for s in state), [], [step], **adam)
    )
    assert read == 4 * 4000 + 4 and written == 4 * 4000


def test_report_splits_per_item_and_per_pass_costs(tmp_path):
    traffic = load_benchmark("traffic")
    report = traffic.main(["--size", "16", "--patch", "32", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "traffic.json").read_text())
    assert saved["rows"] == report["rows"]
    rows = {(row["what"], row["variant"], row["precision"]): row for row in report["rows"]}
    plain = rows["inference", "plain generator, fp32 eager NCHW", "fp32"]
    bf16 = rows["inference", "engine, bf16", "bf16"]
    assert plain["gflop"] == pytest.approx(66.91 * (16 / 128) ** 2, rel=0.01)  # 66.91 GFLOP at 128x128
    assert 0 < bf16["gb"] < 0.6 * plain["gb"]  # half the bytes per element, and fewer passes
    assert bf16["gb_fixed"] > 0  # the weights are read once per pass, whatever the batch
    for precision in ("fp32", "bf16"):
        for phase in ("1", "2"):
            parts = [
                r for key, r in rows.items() if key[0] == f"training, phase {phase}" and key[2] == precision
            ]
            total = next(r for r in parts if r["variant"] == "total")
            assert sum(r["gb"] for r in parts if r is not total) == pytest.approx(total["gb"], abs=2e-4)
            assert total["gflop"] > 0 and total["gb_fixed"] > total["gb"]  # optimisers dominate at 32x32
    assert "ceilings: none given" in (tmp_path / "traffic.md").read_text()
