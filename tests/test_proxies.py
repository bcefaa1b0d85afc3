"""Zero-cost proxies: the model is left untouched, and each score matches a hand value."""

from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas_optuna.networks import AuxiliaryOutputs
from nas_optuna.proxies import PROXIES, compute_proxies, compute_proxy, search_proxies
from search_spaces import get_space

torch.set_num_threads(1)


def _template_network() -> nn.Module:
    torch.manual_seed(0)
    space = get_space("template", profile="search")
    return space.build(space.random_architecture(seed=0), num_classes=6)


def _batch(n: int = 4, size: tuple[int, int] = (64, 96), classes: int = 6):
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(n, 3, *size, generator=generator)
    targets = torch.randint(0, classes, (n, *size), generator=generator)
    targets[:, :7] = 255
    targets[0, :, :5] = 255
    return images, targets


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "channels_last": [p.is_contiguous(memory_format=torch.channels_last)
                          for p in model.parameters() if p.dim() == 4],
    }


def _assert_unchanged(model: nn.Module, before: dict) -> None:
    after = _snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), key
    assert after["modes"] == before["modes"]
    assert after["requires_grad"] == before["requires_grad"]
    assert all(g is None for g in after["grads"])
    assert after["channels_last"] == before["channels_last"]


@pytest.fixture(scope="module")
def network() -> nn.Module:
    return _template_network()


@pytest.mark.parametrize("case", ["network", "network-eval-channels-last", "decoder",
                                  "decoder-params"])
@pytest.mark.parametrize("name", PROXIES)
def test_proxy_leaves_model_unchanged_and_is_finite(network, name, case) -> None:
    net = copy.deepcopy(network)
    images, targets = _batch()
    parameters = None
    if case == "network":
        model, inputs = net, images
        for p in net.stem.parameters():  # a frozen stem must stay frozen
            p.requires_grad_(False)
    elif case == "network-eval-channels-last":
        model, inputs = net.eval().to(memory_format=torch.channels_last), images
        net.decoder.train()  # mixed modes: each submodule's flag is checked
    else:
        with torch.no_grad():
            inputs = [f.detach() for f in net.eval().stem(images)]
        model = net.decoder.train()
        if case == "decoder-params":
            model, parameters = net, list(net.decoder.parameters())
            inputs = images
    before = _snapshot(net)
    score = compute_proxy(name, model, inputs, targets, parameters=parameters)
    assert isinstance(score, float)
    assert math.isfinite(score)
    _assert_unchanged(net, before)


def test_compute_proxies_matches_compute_proxy(network) -> None:
    images, targets = _batch()
    scores = compute_proxies(network, images, targets)
    assert list(scores) == list(PROXIES)
    for name in PROXIES:
        assert compute_proxy(name, network, images, targets) == scores[name]
    some = compute_proxies(network, images, targets, names=["snip"])
    assert some == {"snip": scores["snip"]}


def test_decoder_parameters_give_decoder_scores(network) -> None:
    """Summing over the decoder's parameters of the whole network == scoring the decoder."""
    net = copy.deepcopy(network).eval()
    images, targets = _batch()
    with torch.no_grad():  # the whole network is scored in training mode, its stem too
        features = copy.deepcopy(net.stem).train()(images)
    decoder_params = list(net.decoder.parameters())
    for name in ("grad_norm", "snip"):
        whole = compute_proxy(name, net, images, targets, parameters=decoder_params)
        alone = compute_proxy(name, net.decoder, features, targets)
        assert whole == pytest.approx(alone, rel=1e-5)
        assert compute_proxy(name, net, images, targets) > whole


def test_unknown_name_raises(network) -> None:
    images, targets = _batch()
    with pytest.raises(ValueError, match="known proxies: synflow, naswot"):
        compute_proxy("flops", network, images, targets)
    with pytest.raises(ValueError, match="unknown proxy 'flops'"):
        compute_proxies(network, images, targets, names=["snip", "flops"])


def test_foreign_parameters_raise(network) -> None:
    images, targets = _batch()
    with pytest.raises(ValueError, match="parameter of model"):
        compute_proxy("snip", network, images, targets, parameters=[nn.Parameter(torch.ones(1))])


# synflow ----------------------------------------------------------------------------------


def _two_linear() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False))


def test_synflow_of_two_linear_layers_by_hand() -> None:
    model = _two_linear()
    w1 = model[0].weight.detach().abs().double().numpy()
    w2 = model[1].weight.detach().abs().double().numpy()
    r = np.ones(2) @ w2 @ w1 @ np.ones(3)
    # dR/dW1[j, k] = sum_i |W2[i, j]|; dR/dW2[i, j] = sum_k |W1[j, k]|.
    s1 = np.sum(w1 * (np.ones(2) @ w2)[:, None])
    s2 = np.sum(w2 * (w1 @ np.ones(3))[None, :])
    assert s1 == pytest.approx(r) and s2 == pytest.approx(r)  # degree-1 homogeneous in each
    inputs = torch.randn(5, 3)  # only the shape matters
    before = _snapshot(model)
    assert compute_proxy("synflow", model, inputs, None) == pytest.approx(s1 + s2, rel=1e-12)
    assert compute_proxy("synflow", model, inputs, None,
                         parameters=[model[0].weight]) == pytest.approx(s1, rel=1e-12)
    _assert_unchanged(model, before)  # signs of the weights are back
    assert (model[0].weight < 0).any()


def test_synflow_includes_biases_and_uses_eval_batch_norm() -> None:
    conv = nn.Conv2d(2, 3, kernel_size=1, bias=True)
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.0], [-1.0, -1.0]])[:, :, None, None])
        conv.bias.copy_(torch.tensor([-1.0, 2.0, 0.0]))
        bn.weight.copy_(torch.tensor([-2.0, 1.0, 3.0]))
        bn.bias.copy_(torch.tensor([0.5, -0.5, 0.0]))
        bn.running_var.fill_(4.0)
    model = nn.Sequential(conv, bn)
    pixels = 2 * 3
    # Per channel c, with a = |W| 1 + |b| (the conv output) and s = 1 / sqrt(4 + eps):
    # R = pixels * sum_c (|gamma_c| s a_c + |beta_c|), and theta * dR/dtheta of every
    # parameter is its share of R: conv weights + bias give pixels * |gamma| s a, the BN
    # weight gives the same again, the BN bias gives pixels * |beta|.
    s = 1 / math.sqrt(4.0 + bn.eps)
    a = np.array([3.0 + 1.0, 0.5 + 2.0, 2.0 + 0.0])
    gamma = np.array([2.0, 1.0, 3.0])
    beta = np.array([0.5, 0.5, 0.0])
    expected = pixels * (2 * np.sum(gamma * s * a) + np.sum(beta))
    inputs = torch.randn(7, 2, 2, 3)
    assert compute_proxy("synflow", model, inputs, None) == pytest.approx(expected, rel=1e-12)
    assert model.training


# naswot ------------------------------------------------------------------------------------


def _one_relu() -> nn.Sequential:
    linear = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    return nn.Sequential(linear, nn.ReLU())


def test_naswot_of_one_relu_by_hand() -> None:
    # Codes: (1, -1) -> 100, (-1, 1) -> 010, (1, 1) -> 111; every Hamming distance is 2, so
    # K = [[3, 1, 1], [1, 3, 1], [1, 1, 3]] and det K = 20.
    inputs = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])
    assert compute_proxy("naswot", _one_relu(), inputs, None) == pytest.approx(math.log(20.0))
    # Two ReLU calls concatenate the codes: code length 6 and K doubles, det * 8.
    relu = nn.ReLU()
    twice = nn.Sequential(_one_relu()[0], relu, relu)
    assert compute_proxy("naswot", twice, inputs, None) == pytest.approx(math.log(160.0))


def test_naswot_singular_kernel_is_minus_inf() -> None:
    inputs = torch.tensor([[1.0, -1.0], [1.0, -1.0], [1.0, 1.0]])  # two equal codes
    assert compute_proxy("naswot", _one_relu(), inputs, None) == -math.inf


def test_naswot_without_relu_raises() -> None:
    with pytest.raises(ValueError, match="ReLU"):
        compute_proxy("naswot", nn.Linear(2, 2), torch.randn(3, 2), None)


# grad_norm and snip ------------------------------------------------------------------------


def _small_segmenter() -> nn.Sequential:
    torch.manual_seed(4)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 5, 1))


def _plain_loss_grads(model, images, targets, params):
    work = copy.deepcopy(model).train()
    names = {id(p): n for n, p in model.named_parameters()}
    by_name = dict(work.named_parameters())
    params = [by_name[names[id(p)]] for p in params]
    logits = work(images)
    labels = targets[:, ::2, ::2]  # nearest downsampling by 2
    loss = F.cross_entropy(logits, labels, ignore_index=255)
    grads = [torch.autograd.grad(loss, p, retain_graph=True)[0] for p in params]
    return params, grads


@pytest.mark.parametrize("subset", [False, True])
def test_grad_norm_and_snip_match_a_plain_loop(subset) -> None:
    model = _small_segmenter().eval()
    images, targets = _batch(n=3, size=(16, 20), classes=5)
    params = list(model.parameters())[::2] if subset else list(model.parameters())
    plain_params, grads = _plain_loss_grads(model, images, targets, params)
    grad_norm = sum(g.norm().item() for g in grads)
    snip = sum((p * g).abs().sum().item() for p, g in zip(plain_params, grads))
    kwargs = {"parameters": params} if subset else {}
    scores = compute_proxies(model, images, targets, names=["grad_norm", "snip"], **kwargs)
    assert scores["grad_norm"] == pytest.approx(grad_norm, rel=1e-5)
    assert scores["snip"] == pytest.approx(snip, rel=1e-5)
    global_norm = math.sqrt(sum(g.norm().item() ** 2 for g in grads))
    assert scores["grad_norm"] > global_norm * (1 + 1e-3)  # per-tensor sum, not global
    assert not model.training


class _WithAuxiliary(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.auxiliary = nn.Conv2d(3, 5, 1)

    def forward(self, x):
        logits = self.inner(x)
        if self.training:
            return AuxiliaryOutputs(logits, [self.auxiliary(x)])
        return logits


def test_auxiliary_outputs_are_read_through_logits() -> None:
    inner = _small_segmenter()
    wrapped = _WithAuxiliary(copy.deepcopy(inner))
    images, targets = _batch(n=3, size=(16, 20), classes=5)
    plain = compute_proxies(inner, images, targets)
    with_aux = compute_proxies(wrapped, images, targets)
    assert with_aux == pytest.approx(plain, rel=1e-6)


# jacob_cov ---------------------------------------------------------------------------------


def _reference_jacob_cov(jacobian: np.ndarray) -> float:
    corr = np.corrcoef(jacobian)
    v, _ = np.linalg.eig(corr)
    v = v.real
    k = 1e-5
    return float(-np.sum(np.log(v + k) + 1.0 / (v + k)))


def test_jacob_cov_of_a_linear_model_by_hand() -> None:
    # y = conv1x1(x): d(sum y)/dx[c, h, w] = sum_k W[k, c] for every image, so all rows
    # are equal, the correlation matrix is all ones, and its eigenvalues are n, 0, ..., 0.
    torch.manual_seed(5)
    model = nn.Conv2d(3, 4, 1)
    n = 4
    k = 1e-5
    expected = -(math.log(n + k) + 1 / (n + k) + (n - 1) * (math.log(k) + 1 / k))
    score = compute_proxy("jacob_cov", model, torch.randn(n, 3, 5, 6), None)
    assert score == pytest.approx(expected, rel=1e-6)


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 3, 3, padding=1)
        self.b = nn.Conv2d(4, 3, 1)

    def forward(self, xs):
        return torch.tanh(self.a(xs[0])) * torch.sigmoid(self.b(xs[1]))


def test_jacob_cov_matches_jacrev_per_image() -> None:
    torch.manual_seed(6)
    model = _TwoInputs()
    xs = [torch.randn(5, 2, 4, 6), torch.randn(5, 4, 4, 6)]

    def total(a, b):
        return model([a[None], b[None]]).sum()

    rows = []
    for i in range(5):
        ja, jb = torch.func.jacrev(total, argnums=(0, 1))(xs[0][i], xs[1][i])
        rows.append(torch.cat([ja.flatten(), jb.flatten()]).detach().double().numpy())
    expected = _reference_jacob_cov(np.stack(rows))
    assert compute_proxy("jacob_cov", model, xs, None) == pytest.approx(expected, rel=1e-6)


def test_jacob_cov_of_constant_output_is_nan() -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU())
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.fill_(-1.0)  # dead ReLU: zero Jacobian rows
    assert math.isnan(compute_proxy("jacob_cov", model, torch.randn(3, 3, 4, 4), None))


# devices -----------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", PROXIES)
def test_cuda_matches_cpu(network, name) -> None:
    images, targets = _batch()
    cpu = compute_proxy(name, network, images, targets)
    gpu_net = copy.deepcopy(network).cuda()
    gpu = compute_proxy(name, gpu_net, images.cuda(), targets.cuda())
    if name == "naswot":
        assert gpu == pytest.approx(cpu, abs=1e-2)
    else:
        assert gpu == pytest.approx(cpu, rel=1e-2)


# --- in the search: stored on every trial, and the pre-screen -----------------------------
def test_every_trial_stores_its_proxies_before_training(tmp_path, monkeypatch) -> None:
    from nas_optuna import objective as objective_module
    from nas_optuna.config import parse_config
    from nas_optuna.study import prepare_data, run_search
    from tests.conftest import fake_trainer, tiny_config_dict

    monkeypatch.setattr(objective_module, "train_architecture", fake_trainer([0.5, 0.4, 0.6]))
    config = parse_config(tiny_config_dict(tmp_path, proxies={"names": ["synflow", "snip"]}))
    study = run_search(config)
    space = get_space("template", profile="search")
    _, data = prepare_data(config, space, torch.device("cpu"))
    for trial in study.trials:
        assert trial.user_attrs["proxy_seconds"] >= 0
        assert "proxy_naswot" not in trial.user_attrs
        # The same numbers as the public function on the trial's untrained network.
        torch.manual_seed(0 * 100_003 + trial.number)
        stem = space.build_stem()
        stem.load_state_dict(data.stem_state)
        network = space.build(space.from_params(trial.params), data.num_classes, stem=stem)
        expected = search_proxies(network, data, ["synflow", "snip"], batch_size=8)
        assert trial.user_attrs["proxy_synflow"] == pytest.approx(expected["synflow"])
        assert trial.user_attrs["proxy_snip"] == pytest.approx(expected["snip"])


def test_prescreen_rejects_below_the_quantile_after_startup(tmp_path, monkeypatch) -> None:
    from nas_optuna import objective as objective_module
    from nas_optuna.config import parse_config
    from nas_optuna.study import run_search
    from tests.conftest import fake_trainer, tiny_config_dict

    scores = iter([5.0, 3.0, 4.0, 1.0, 6.0, 2.0])
    monkeypatch.setattr(objective_module, "search_proxies",
                        lambda network, data, names, batch_size: {"snip": next(scores)})
    monkeypatch.setattr(objective_module, "train_architecture",
                        fake_trainer([0.5] * 6))
    raw = tiny_config_dict(tmp_path, study={"n_trials": 6}, proxies={"names": ["snip"]},
                           prescreen={"proxy": "snip", "quantile": 0.5, "startup": 3})
    study = run_search(parse_config(raw))
    # Medians of the earlier proxies: trial 3 vs {5,3,4} -> 4 (1 < 4: rejected); trial 4
    # vs {5,3,4,1} -> 3.5 (6 passes); trial 5 vs {5,3,4,1,6} -> 4 (2: rejected).
    rejected = ["rejected" in t.user_attrs for t in study.trials]
    assert rejected == [False, False, False, True, False, True]
    for trial in study.trials:
        assert trial.state.name == "COMPLETE"
        if "rejected" in trial.user_attrs:
            assert trial.value == 0.0 and "reward_stage1" not in trial.user_attrs
            assert "below the 0.5 quantile" in trial.user_attrs["rejected"]


@pytest.mark.parametrize(("tables", "message"), [
    ({"proxies": {"names": ["zico"]}}, "unknown proxy 'zico'"),
    ({"prescreen": {"proxy": "naswot"}, "proxies": {"names": ["snip"]}},
     "must be among [proxies] names"),
    ({"prescreen": {"proxy": "snip", "quantile": 1.0}}, "quantile must be in (0, 1)"),
    ({"proxies": {"batch_size": 1}}, "batch_size must be >= 2"),
])
def test_bad_proxy_settings_are_one_line_config_errors(tmp_path, tables, message) -> None:
    from nas_optuna.config import parse_config
    from nas_optuna.exceptions import ConfigError
    from tests.conftest import tiny_config_dict

    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(tiny_config_dict(tmp_path, **tables))
