"""How the dense part runs (panoptic_ros.model.dense): modes, their checks, and compile parity on the CPU.

CUDA graphs need a GPU: their capture, first-replay check and fallback run in the GPU check
(tools/gpu_check.sh); here, what the CPU can show.
"""
import numpy as np
import pytest
import torch

from helpers_model import save_tiny_model
from panoptic_ros.model.dense import DenseRunner, resolve_dense_mode
from panoptic_ros.model.predictor import Predictor
from panoptic_ros.params import ModelParams
from panoptic_ros.pipeline import load_predictor


def test_modes_resolve_per_device() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_dense_mode("auto", cpu) == "eager"
    assert resolve_dense_mode("auto", cuda) == "cuda_graph"
    assert resolve_dense_mode("compile", cpu) == "compile"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_dense_mode("cuda_graph", cpu)
    with pytest.raises(ValueError, match="dense_mode must be one of"):
        resolve_dense_mode("turbo", cpu)


def test_node_parameter_reaches_the_predictor(tmp_path) -> None:
    weights = save_tiny_model(tmp_path / "tiny.safetensors")
    predictor = load_predictor(ModelParams(path=str(weights), device="cpu"))
    assert predictor.dense.mode == "eager" and predictor.channels_last is True and not predictor.test_time_flip
    assert load_predictor(ModelParams(path=str(weights), device="cpu", test_time_flip=True)).test_time_flip
    with pytest.raises(ValueError, match="needs a CUDA device"):
        load_predictor(ModelParams(path=str(weights), device="cpu", dense_mode="cuda_graph"))


@pytest.mark.timeout(400)
def test_compiled_dense_part_matches_eager(tmp_path) -> None:
    weights = save_tiny_model(tmp_path / "tiny.safetensors", permissive=True)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (64, 128, 3), dtype=np.uint8) for _ in range(2)]
    eager = Predictor.from_file(weights, device="cpu", dense_mode="eager")
    compiled = Predictor.from_file(weights, device="cpu", dense_mode="compile")
    x = eager.model.normalize(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2))
    p_e, sem_e = eager.dense(x, torch.float32)
    p_c, sem_c = compiled.dense(x, torch.float32)
    torch.testing.assert_close(sem_c, sem_e, rtol=1e-4, atol=1e-4)
    for a, b in zip(p_c, p_e):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    for a, b in zip(eager.predict(frames), compiled.predict(frames)):
        assert a.num_instances == b.num_instances > 0
        assert (a.class_map == b.class_map).mean() > 0.999
        assert (a.instance_map == b.instance_map).mean() > 0.99


def test_moving_to_the_cpu_drops_graph_mode() -> None:
    class M(torch.nn.Module):
        def features(self, x):
            return [x], x

    runner = DenseRunner(M(), "eager", torch.device("cpu"))
    runner.mode = "cuda_graph"  # as on a GPU, before the pipeline's fallback moves the model
    runner.moved_to(torch.device("cpu"))
    assert runner.mode == "eager"
    p, sem = runner(torch.ones(1, 3, 4, 4), torch.float32)
    assert sem.shape == (1, 3, 4, 4)
