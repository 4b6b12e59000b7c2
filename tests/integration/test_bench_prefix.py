"""``llmd-bench prefix`` runs every part and prints its figures (a smoke run: no timing
thresholds)."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

from llmd_bench.cli import main
from llmd_bench.prefix import event_frames, measure, table, verdict

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def test_every_figure_is_measured():
    f = measure(
        approx_tokens=(1000,),
        precise_tokens=(500, 2000),
        rounds=2,
        event_messages=100,
        entries=8000,
    )
    figures = [*f.approx_ms.values(), *f.precise_cold_ms.values(), *f.precise_seen_ms.values()]
    assert len(figures) == 5 and all(math.isfinite(v) and v > 0 for v in figures)
    assert f.events_per_s > 0 and f.blocks_per_s == f.events_per_s * 16
    assert 50 < f.approx_bytes_per_entry < 2000 and 50 < f.precise_bytes_per_entry < 4000
    assert "| precise, prefix seen" in table(f) and verdict(f) == ""  # no 100k row: no budget


def test_event_frames_are_chained_vllm_messages():
    frames = event_frames(3)
    assert [int.from_bytes(f[1], "big") for f in frames] == [0, 1, 2]
    assert all(len(f) == 3 and f[0].startswith(b"kv@") for f in frames)


def test_the_command_line_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "prefix.json"
    main(
        [
            "prefix",
            "--approx-tokens", "500",
            "--precise-tokens", "500",
            "--rounds", "1",
            "--event-messages", "20",
            "--entries", "800",
            "--json", str(out),
        ]
    )  # fmt: skip
    assert "KV events indexed" in capsys.readouterr().out
    assert set(json.loads(out.read_text())) >= {"approx_ms", "events_per_s"}
