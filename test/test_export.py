"""ONNX export of the dense part: onnxruntime matches PyTorch within fp32 tolerance, with a dynamic batch."""
import onnx
import torch

from panoptic_ros.model.checkpoint import ModelCard, save_model
from panoptic_ros.model.config import ModelConfig
from panoptic_ros.model.efficientps import build_model
from panoptic_ros.model.export import check_parity, export_onnx, output_names, run
from helpers_model import TINY



def test_onnx_matches_pytorch_for_several_batch_sizes(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(pretrained_backbone=False, **TINY)).eval()
    # Non-trivial batch-norm statistics, so folding them is exercised.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    path = export_onnx(model, tmp_path / "dense.onnx", 64, 128)
    graph = onnx.load(str(path)).graph
    assert [o.name for o in graph.output] == output_names()
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    report = check_parity(model, path, 64, 128, batch_sizes=(1, 3))
    assert report.ok, report
    assert report.max_rel_error < 1e-5


def test_export_command_writes_file_and_parity_report(tmp_path):
    torch.manual_seed(1)
    cfg = ModelConfig(pretrained_backbone=False, **TINY)
    weights = save_model(build_model(cfg).eval(), tmp_path / "m.safetensors", ModelCard(name="t", config=cfg))
    import argparse
    args = argparse.Namespace(model=str(weights), format="onnx", out=str(tmp_path / "out.onnx"), size=None, opset=17)
    assert run(args) == 0
    assert (tmp_path / "out.onnx").stat().st_size > 10_000
    assert (tmp_path / "out.parity.json").exists()
