"""The two-stage trainer: learning, stage semantics, reporter, failures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from nas_optuna.config import TrainConfig
from nas_optuna.data import build_dataset
from nas_optuna.exceptions import TrialFailed
from nas_optuna.networks import StemDecoderNetwork
from nas_optuna.training import SearchData, initialise_stem, prepare_search_data, train_architecture
from search_spaces import get_space
from search_spaces.template import ARCH1_GENOTYPE

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def search_data(tmp_path_factory: pytest.TempPathFactory) -> SearchData:
    source = build_dataset("synthetic", num_images=60, image_size=(32, 48), num_classes=4)
    space = get_space("template")
    return prepare_search_data(
        source,
        build_stem=space.build_stem,
        stem_id=space.stem_id,
        initialise_stem=lambda stem, ds: initialise_stem(
            stem, ds, mode="warmup", num_classes=4, warmup_epochs=1, batch_size=8, device=CPU
        ),
        stem_weights="warmup",
        warmup_epochs=1,
        batch_size=8,
        cache_dir=tmp_path_factory.mktemp("cache"),
    )


def _network(data: SearchData, seed: int = 0) -> StemDecoderNetwork:
    torch.manual_seed(seed)
    space = get_space("template")
    stem = space.build_stem()
    stem.load_state_dict(data.stem_state)
    return space.build(space.from_genotype(ARCH1_GENOTYPE), data.num_classes, stem=stem)


def test_training_improves_the_reward_over_an_untrained_network(search_data) -> None:
    untrained = train_architecture(
        _network(search_data),
        search_data,
        TrainConfig(
            stage1_epochs=0, stage2_epochs=1, decoder_lr=1e-12, stem_lr=1e-12, batch_size=8
        ),
        device=CPU,
    )
    trained = train_architecture(
        _network(search_data),
        search_data,
        TrainConfig(stage1_epochs=4, stage2_epochs=1, batch_size=8),
        device=CPU,
    )
    assert set(trained.stage_metrics) == {1, 2}
    for metrics in trained.stage_metrics.values():
        assert set(metrics) >= {"miou", "macc", "fwiou", "reward"}
        assert 0.0 <= metrics["reward"] <= 1.0
    assert trained.final_metrics["reward"] > untrained.final_metrics["reward"] + 0.05


def test_stage1_trains_only_the_generated_part(search_data) -> None:
    network = _network(search_data)
    decoder_before = [p.detach().clone() for p in network.decoder.parameters()]
    train_architecture(
        network,
        search_data,
        TrainConfig(stage1_epochs=1, stage2_epochs=0, batch_size=8),
        device=CPU,
    )
    for name, tensor in network.stem.state_dict().items():
        assert torch.equal(tensor, search_data.stem_state[name]), name
    changed = [not torch.equal(a, b) for a, b in zip(decoder_before, network.decoder.parameters())]
    assert any(changed)


def test_stage2_trains_the_stem_too(search_data) -> None:
    network = _network(search_data)
    train_architecture(
        network,
        search_data,
        TrainConfig(stage1_epochs=0, stage2_epochs=1, batch_size=8),
        device=CPU,
    )
    weights = [k for k in search_data.stem_state if k.endswith("weight")]
    assert any(
        not torch.equal(network.stem.state_dict()[k], search_data.stem_state[k]) for k in weights
    )


def test_reporter_sees_each_stage_and_can_stop_training(search_data) -> None:
    seen = []

    def reporter(stage: int, metrics: dict) -> bool:
        seen.append((stage, metrics["reward"]))
        return False

    result = train_architecture(
        _network(search_data),
        search_data,
        TrainConfig(stage1_epochs=1, stage2_epochs=1, batch_size=8),
        device=CPU,
        reporter=reporter,
    )
    assert [s for s, _ in seen] == [1]
    assert result.stopped_after == 1
    assert list(result.stage_metrics) == [1]
    assert result.stage_metrics[1]["reward"] == seen[0][1]


def test_polyak_average_is_what_gets_validated(search_data, monkeypatch) -> None:
    from nas_optuna.training import trainer

    validated = []
    real_evaluate = trainer._evaluate
    monkeypatch.setattr(
        trainer,
        "_evaluate",
        lambda model, *args: validated.append(model) or real_evaluate(model, *args),
    )
    network = _network(search_data)
    train_architecture(
        network,
        search_data,
        TrainConfig(stage1_epochs=1, stage2_epochs=1, batch_size=8),
        device=CPU,
    )
    assert len(validated) == 2
    assert validated[0] is not network.decoder and validated[1] is not network
    # The averages differ from the raw weights they were made from.
    raw = dict(network.named_parameters())
    averaged = dict(validated[1].named_parameters())
    assert any(not torch.equal(raw[k], averaged[k]) for k in raw)


def test_polyak_decay_warms_up_to_the_papers_value() -> None:
    from nas_optuna.training.trainer import _PolyakAverage

    model = nn.Linear(1, 1, bias=False)
    average = _PolyakAverage(model, decay=0.9)
    expected = None
    for step in range(1, 60):
        with torch.no_grad():
            model.weight.fill_(float(step))
        average.update_parameters(model)
        decay = min(0.9, step / (9 + step))
        expected = float(step) if expected is None else decay * expected + (1 - decay) * step
    assert average.module.weight.item() == pytest.approx(expected, rel=1e-5)
    # Late in training the decay is the papers' 0.9: the average lags the weights.
    assert 50 < average.module.weight.item() < 59


def test_polyak_average_matches_torchs_ema_on_a_network_with_batch_norm() -> None:
    """The cached-list fast path averages exactly what AveragedModel's EMA averages."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from nas_optuna.training.trainer import _PolyakAverage

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    ours = _PolyakAverage(model, decay=0.9)
    updates = 0

    def warmed_up(averaged, current, count):  # the same warm-up as ours, through torch
        get_ema_multi_avg_fn(min(0.9, updates / (9 + updates)))(averaged, current, count)

    reference = AveragedModel(model, multi_avg_fn=warmed_up, use_buffers=True)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(25):
        model(torch.randn(2, 3, 8, 8)).square().mean().backward()
        optimiser.step()
        optimiser.zero_grad()
        updates += 1
        ours.update_parameters(model)
        reference.update_parameters(model)
    theirs = dict(reference.module.state_dict())
    for name, value in ours.module.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, theirs[name], rtol=1e-6, atol=1e-7)
        else:  # num_batches_tracked: copied from the model (torch's EMA rounds it)
            assert torch.equal(value, model.state_dict()[name])


def test_optimisers_use_fused_kernels_on_cpu(search_data, monkeypatch) -> None:
    created = []
    real_adam = torch.optim.Adam

    def spy(*args, **kwargs):
        created.append(kwargs)
        return real_adam(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", spy)
    train_architecture(_network(search_data), search_data,
                       TrainConfig(stage1_epochs=1, stage2_epochs=1, batch_size=8), device=CPU)
    assert created and all(kwargs.get("fused") is True for kwargs in created)


def test_training_and_validation_run_channels_last_on_cpu(search_data) -> None:
    # Channels-last is the faster layout for these networks on CPU too
    # (docs/benchmarks_throughput.md); every convolution must see it, in both stages.
    network = _network(search_data)
    layouts: list[bool] = []

    def record(module: nn.Module, inputs: tuple) -> None:
        if inputs[0].dim() == 4 and inputs[0].shape[1] > 1 and inputs[0].shape[-1] > 1:
            layouts.append(inputs[0].is_contiguous(memory_format=torch.channels_last))

    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_pre_hook(record)
    train_architecture(network, search_data,
                       TrainConfig(stage1_epochs=1, stage2_epochs=1, batch_size=8), device=CPU)
    assert len(layouts) > 20 and all(layouts)
    weights = [m.weight for m in network.modules() if isinstance(m, nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)


def test_a_non_finite_loss_is_reported_with_its_value_and_stage() -> None:
    from nas_optuna.training.trainer import _NonFiniteWatch

    watch = _NonFiniteWatch(stage=2)
    for value in (1.0, 0.5, float("inf"), float("nan"), 0.3):
        watch.observe(torch.tensor(value))
    with pytest.raises(TrialFailed, match=r"non-finite loss inf in stage 2"):
        watch.check()
    fine = _NonFiniteWatch(stage=1)
    fine.observe(torch.tensor(0.7))
    fine.check()  # finite losses pass


class _NaNDecoder(nn.Module):
    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, features):
        return self.decoder(features) * float("nan")


class _OOMDecoder(_NaNDecoder):
    def forward(self, features):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.parametrize(
    ("wrapper", "reason"), [(_NaNDecoder, "nan_loss"), (_OOMDecoder, "out_of_memory")]
)
def test_nan_loss_and_out_of_memory_fail_the_trial_with_a_reason(
    search_data, wrapper, reason
) -> None:
    network = _network(search_data)
    network.decoder = wrapper(network.decoder)
    with pytest.raises(TrialFailed) as info:
        train_architecture(
            network,
            search_data,
            TrainConfig(stage1_epochs=1, stage2_epochs=1, batch_size=8),
            device=CPU,
        )
    assert info.value.reason == reason


def test_features_are_cached_and_reused(tmp_path: Path) -> None:
    source = build_dataset("synthetic", num_images=20, image_size=(32, 32), num_classes=3)
    space = get_space("template")
    calls = []

    def initialise(stem, dataset):
        calls.append(len(dataset))
        return "random"

    kwargs = dict(
        build_stem=space.build_stem,
        stem_id=space.stem_id,
        initialise_stem=initialise,
        stem_weights="random",
        warmup_epochs=0,
        cache_dir=tmp_path,
        batch_size=4,
    )
    first = prepare_search_data(source, **kwargs)
    second = prepare_search_data(source, **kwargs)
    assert calls == [18]  # 90% of 20 images; the second call read the cache
    assert len(list(tmp_path.glob("stem-features-*.pt"))) == 1
    assert first.key == second.key
    for a, b in zip(first.train_features, second.train_features):
        assert torch.equal(a, b)
    # Mirrored views double stage 1's data; features match the stem's outputs.
    assert len(first.train_labels) == 36
    assert [f.shape[1:] for f in first.train_features] == [(24, 8, 8), (32, 4, 4)]
    assert first.train_features[0].dtype == torch.float16
    # A corrupt cache file is rebuilt, never trusted.
    next(tmp_path.glob("stem-features-*.pt")).write_bytes(b"garbage")
    third = prepare_search_data(source, **kwargs)
    assert calls == [18, 18]
    assert torch.equal(third.val_labels, first.val_labels)
    # Another split is another cache entry.
    prepare_search_data(source, **kwargs, split_seed=1)
    assert len(list(tmp_path.glob("stem-features-*.pt"))) == 2


def test_validations_inside_stage_1_report_the_averaged_decoder_and_can_stop(
        search_data) -> None:
    from nas_optuna.training import validation_epochs

    assert validation_epochs(6, 3) == [2, 4, 6]
    assert validation_epochs(3, 3) == [1, 2, 3]
    assert validation_epochs(5, 1) == [5]
    assert validation_epochs(5, 2) == [3, 5]
    with pytest.raises(ValueError):
        validation_epochs(2, 3)
    seen = []

    def validation(index: int, metrics: dict) -> bool:
        seen.append((index, metrics["reward"]))
        return index < 2

    stages = []
    config = TrainConfig(stage1_epochs=3, stage2_epochs=1, batch_size=8, stage1_validations=3)
    result = train_architecture(_network(search_data), search_data, config, device=CPU,
                                reporter=lambda stage, m: stages.append(stage) or True,
                                validation_reporter=validation)
    assert [i for i, _ in seen] == [1, 2]
    assert stages == []  # stopped at validation 2, before stage 1's end
    assert result.stopped_after == 1 and list(result.stage_metrics) == [1]
    assert result.stage_metrics[1]["reward"] == seen[-1][1]
    assert result.evaluated is not None
    # The same seed without stopping: the same first two validations (they do not disturb
    # training), then stage 1's end and stage 2.
    again = []
    train_architecture(_network(search_data), search_data, config, device=CPU,
                       reporter=lambda stage, m: again.append(("stage", stage)) or True,
                       validation_reporter=lambda i, m: again.append((i, m["reward"])) or True)
    assert again[:2] == seen and again[2:] == [("stage", 1), ("stage", 2)]
