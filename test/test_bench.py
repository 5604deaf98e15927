"""``panoptic-ros bench`` runs every variant end to end and writes its table, JSON and histogram."""
import json


from panoptic_ros.cli import main
from helpers_model import save_tiny_model


def test_bench_runs_all_variants_on_cpu(tmp_path):
    weights = save_tiny_model(tmp_path / "tiny.safetensors")
    rc = main(["bench", "--model", str(weights), "--device", "cpu", "--sizes", "64x128", "--batches", "2",
               "--iterations", "2", "--warmup", "1", "--out", str(tmp_path / "b")])
    assert rc == 0
    doc = json.loads((tmp_path / "b" / "bench.json").read_text())
    rows = doc["rows"]
    assert {(r["variant"], r["batch"]) for r in rows} == {(v, b) for v in ("ours", "ours-fp32", "baseline")
                                                          for b in (2,)}
    for r in rows:
        assert r["p50_ms"] > 0 and r["frames_per_s"] > 0 and r["iterations"] == 2
        assert set(r["stage_ms"]) >= {"network_ms", "fusion_ms", "tracking_ms", "encode_ms"}
    table = (tmp_path / "b" / "bench.md").read_text()
    assert "vs baseline" in table and table.count("| baseline |") == 1
    assert (tmp_path / "b" / "latency.png").stat().st_size > 1000
