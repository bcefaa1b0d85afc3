"""Export: every space's network as ONNX and TorchScript, equal to the eager eval model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from torch import nn

from nas_optuna.cli import main
from nas_optuna.exceptions import ConfigError
from nas_optuna.export import EXPORT_FORMATS, export_model, inference_network
from search_spaces import SPACES, get_space

SIZE = (64, 64)
CLASSES = 4

# torch.jit.load warns that TorchScript is deprecated upstream (see nas_optuna.export).
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


def _network(space_name: str, seed: int = 0) -> nn.Module:
    """A seeded network with non-trivial batch-norm statistics (eval mode uses them)."""
    space = get_space(space_name, profile="search")
    torch.manual_seed(seed)
    network = space.build(space.random_architecture(seed=seed), CLASSES)
    generator = torch.Generator().manual_seed(seed)
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape,
                                                        generator=generator))
            module.running_var.copy_(0.5 + torch.rand(module.running_var.shape,
                                                      generator=generator))
    return network


def _eager(network: nn.Module, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return inference_network(network)(images).numpy()


def _images(batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, 3, *SIZE, generator=torch.Generator().manual_seed(1))


@pytest.mark.slow
@pytest.mark.parametrize("space_name", SPACES.names())
def test_onnx_and_torchscript_match_the_eager_eval_model(space_name: str,
                                                         tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    network = _network(space_name)
    network.train()
    images = _images()  # batch 3: the export's example has batch 2, so the axis is dynamic
    expected = _eager(network, images)

    onnx_path = export_model(network, tmp_path / "net.onnx", "onnx", SIZE)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    (onnx_out,) = session.run(None, {"image": images.numpy()})
    np.testing.assert_allclose(onnx_out, expected, atol=1e-4, rtol=1e-4)
    (single,) = session.run(None, {"image": images[:1].numpy()})
    np.testing.assert_allclose(single, expected[:1], atol=1e-4, rtol=1e-4)

    script_path = export_model(network, tmp_path / "net.pt", "torchscript", SIZE)
    loaded = torch.jit.load(str(script_path))
    with torch.no_grad():
        np.testing.assert_allclose(loaded(images).numpy(), expected, atol=1e-4, rtol=1e-4)
    assert not any("auxiliary" in name for name, _ in loaded.named_parameters())

    assert network.training  # the caller's network is copied, not changed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx", "net.pt"]  # no temp files


def test_auxiliary_heads_are_left_out_of_the_inference_network() -> None:
    network = _network("auxcell")
    assert any(".auxiliary." in name for name, _ in network.named_parameters())
    model = inference_network(network)
    assert not model.training
    assert not any(".auxiliary." in name for name, _ in model.named_parameters())
    assert any(".auxiliary." in name for name, _ in network.named_parameters())


def test_bad_format_and_size_are_config_errors(tmp_path: Path) -> None:
    network = _network("rspnet")
    with pytest.raises(ConfigError, match="unknown export format 'tflite'"):
        export_model(network, tmp_path / "x", "tflite", SIZE)
    with pytest.raises(ConfigError, match="input size must be positive"):
        export_model(network, tmp_path / "x", "onnx", (0, 64))
    with pytest.raises(ConfigError, match="does not exist"):
        export_model(network, tmp_path / "missing" / "x.pt", "torchscript", SIZE)
    assert list(tmp_path.iterdir()) == []
    assert EXPORT_FORMATS == ("onnx", "torchscript")


# --- the command ---------------------------------------------------------------------------

@pytest.fixture
def stored(tmp_path: Path) -> tuple[str, nn.Module]:
    """A study with one rspnet trial (as a search stores it) and that trial's network.

    rspnet is the quickest space to export; every space is exported above.
    """
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=storage,
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_user_attr("space", {"name": "rspnet", "profile": "search"})
    study.set_user_attr("num_classes", CLASSES)
    space = get_space("rspnet", profile="search")
    trial = study.ask()
    arch = space.suggest(trial)
    study.tell(trial, 0.5)
    torch.manual_seed(3)
    return storage, space.build(arch, CLASSES)


def _export(storage: str, *extra: str) -> int:
    return main(["export", "--storage", storage, "--study-name", "s", "--trial", "0",
                 "--input-size", str(SIZE[0]), str(SIZE[1]), *extra])


@pytest.mark.slow
def test_export_a_stored_trial_from_the_cli(stored, tmp_path: Path, capsys) -> None:
    storage, network = stored
    out_path = tmp_path / "fresh.pt"
    assert _export(storage, "--format", "torchscript", "-o", str(out_path)) == 0
    out = capsys.readouterr().out
    assert "freshly initialised weights" in out and "TorchScript" in out
    fresh = torch.jit.load(str(out_path))
    with torch.no_grad():
        assert fresh(_images(1)).shape == (1, CLASSES, 16, 16)

    weights = tmp_path / "trained.pt"
    torch.save(network.state_dict(), weights)
    onnx_path = tmp_path / "trained.onnx"
    assert _export(storage, "--format", "onnx", "-o", str(onnx_path),
                   "--weights", str(weights)) == 0
    out = capsys.readouterr().out
    assert f"weights from {weights}" in out and "opset 18" in out
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    images = _images(2)
    (logits,) = session.run(None, {"image": images.numpy()})
    np.testing.assert_allclose(logits, _eager(network, images), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "tflite"], "unknown export format 'tflite'"),
        (["--format", "onnx", "--trial", "7"], "has no trial 7"),
        (["--format", "onnx", "--study-name", "nope"], "no study 'nope'"),
        (["--format", "onnx", "--weights", "/nonexistent/w.pt"], "--weights file not found"),
        (["--format", "onnx", "--num-classes", "9", "--weights", "{weights}"],
         "does not fit the trial's network"),
        (["--format", "onnx", "--input-size", "0", "8"], "--input-size must be positive"),
    ],
)
def test_bad_export_input_one_line_exit_2(stored, tmp_path: Path, capsys, argv, message) -> None:
    storage, network = stored
    weights = tmp_path / "w.pt"
    torch.save(network.state_dict(), weights)
    argv = [a.replace("{weights}", str(weights)) for a in argv]
    out_path = tmp_path / "out.onnx"
    assert _export(storage, "-o", str(out_path), *argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nas-optuna: error: ")
    assert message in err
    assert not out_path.exists()
