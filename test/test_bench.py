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


def test_bench_checks_that_optimised_variants_keep_their_pq(tmp_path, capsys):
    weights = save_tiny_model(tmp_path / "tiny.safetensors", permissive=True)
    args = ["bench", "--model", str(weights), "--device", "cpu", "--sizes", "64x128", "--batches", "1",
            "--iterations", "1", "--warmup", "0", "--accuracy-frames", "4", "--out", str(tmp_path / "b")]
    assert main(args) == 0
    acc = {r["variant"]: r for r in json.loads((tmp_path / "b" / "bench.json").read_text())["accuracy"]}
    assert set(acc) == {"ours", "ours-fp32"} and acc["ours"]["frames"] == 4
    assert acc["ours-fp32"]["delta_pq"] is None
    assert acc["ours"]["delta_pq"] == 0.0  # on the CPU "ours" is fp32 eager: the same numbers
    assert "within budget" in (tmp_path / "b" / "bench.md").read_text()
    # a budget nothing can meet fails the run, naming the variant
    assert main(args + ["--max-pq-drop", "-1"]) == 1
    assert "ours lose more than -1.0 PQ" in capsys.readouterr().out
    assert main(args + ["--variants", "ours,warp-drive"]) == 2
    assert "unknown variant 'warp-drive'" in capsys.readouterr().err
