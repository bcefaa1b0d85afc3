"""Zero-cost proxies: training-free scores of an untrained segmentation network.

Each score is computed from ONE batch (or, for ``synflow``, from no data at all) before
any training, and is meant to rank architectures, higher = predicted better.

Conventions:
    * ``model`` maps ``inputs`` to logits ``(N, classes, h, w)``; a decoder that returns
      :class:`~nas_optuna.networks.AuxiliaryOutputs` in training mode is read through its
      ``logits`` (the auxiliary heads are ignored). ``inputs`` is an image tensor (a whole
      :class:`~nas_optuna.networks.StemDecoderNetwork`) or a list of tensors (a decoder fed
      the cached stem feature maps); ``targets`` are ``(N, H, W)`` int64 labels, 255 =
      ignore. Everything runs on the inputs' device.
    * The model is never touched: every proxy works on a :func:`copy.deepcopy` of it, so
      parameters, buffers (batch-norm running statistics), ``requires_grad``, ``.grad`` and
      the train/eval flag of every submodule stay exactly as they were.
    * ``parameters`` (default: all of ``model``'s) are the tensors that ``synflow``,
      ``grad_norm`` and ``snip`` sum over; the project passes the decoder's, since the stem
      is shared by all architectures. Gradients still flow through the whole model.
    * Modes: ``synflow`` runs in eval mode (batch norm uses its running statistics, as in
      Tanaka et al.'s pruning code; an all-ones batch of one would be normalised away in
      training mode, and an untrained BN in eval mode is almost the identity, close to the
      BN-free copy of Abdelfattah et al.). The other four run in training mode (batch
      statistics, as at the first training step and in the reference implementations),
      with dropout switched off so that every score is deterministic. The mode applies to
      the whole model: a whole network is scored with its stem's batch norm in training
      mode too, while a decoder scored on cached stem features sees them as cached.
    * ``synflow``: every parameter of the copy is replaced by its absolute value, the copy
      is cast to float64 (avoids overflow), the input is all ones with the batch's shape
      but batch size 1 (each tensor of a list), ``R`` is the sum of the logits and the
      score is ``sum |theta * dR/dtheta|`` over ``parameters`` (all of them: weights,
      biases and batch-norm affine terms alike). The **raw** score is returned, not its
      logarithm (log is monotone, so rankings are the same; take ``math.log`` to report
      it as papers do).
    * Loss of ``grad_norm`` and ``snip``: cross-entropy with ``ignore_index=255`` (mean
      over counted pixels) of the float32 logits against the labels **nearest-downsampled
      to the logits' size**, the resolution the project's trainer uses.
    * ``grad_norm``: the **sum of the per-tensor L2 norms** of ``dL/dtheta`` (as in
      Abdelfattah et al.), not the global norm. ``snip``: ``sum |theta * dL/dtheta|``
      (Lee et al., as in Abdelfattah et al.). A parameter that the logits do not depend on
      contributes 0.
    * ``naswot`` (Mellor et al., ICML 2021): the binary code of an image is ``output > 0``
      of every ReLU-type module (``nn.ReLU``, ``ReLU6``, ``LeakyReLU``, ``PReLU``,
      ``RReLU``) of the model, each call counted; ``K[i, j] = N_A - Hamming(c_i, c_j)``
      and the score is ``log|det K|`` (``torch.linalg.slogdet``, float64). Functional
      ``F.relu`` calls are invisible; a model without ReLU modules raises ``ValueError``.
    * ``jacob_cov`` (Mellor et al., v1 2020): one backward of the sum of the logits over
      the whole batch gives, per image, the gradient w.r.t. its input (a list's tensors
      flattened and concatenated); with batch norm in training mode that row also carries
      the coupling through the batch statistics, as in the reference code. The score is
      ``-sum(log(v + k) + 1 / (v + k))``, ``k = 1e-5``, over the eigenvalues ``v`` of
      ``np.corrcoef`` of the rows.
    * Non-finite results are returned as they are, as floats: a singular ``naswot``
      kernel gives ``-inf``; a constant Jacobian row or all-ignored labels give ``nan``;
      a huge network can overflow ``synflow`` to ``inf``.

Example:
    >>> import torch
    >>> from nas_optuna.proxies import compute_proxies
    >>> from search_spaces import get_space
    >>> space = get_space("template", profile="search")
    >>> net = space.build(space.random_architecture(seed=0), num_classes=6)
    >>> images = torch.randn(4, 3, 64, 96)
    >>> labels = torch.randint(0, 6, (4, 64, 96))
    >>> scores = compute_proxies(net.decoder, net.stem(images), labels)
    >>> sorted(scores)
    ['grad_norm', 'jacob_cov', 'naswot', 'snip', 'synflow']
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas_optuna.labels import IGNORE_INDEX
from nas_optuna.networks import AuxiliaryOutputs, module_device

if TYPE_CHECKING:
    from nas_optuna.networks import StemDecoderNetwork
    from nas_optuna.training import SearchData

__all__ = ["PROXIES", "PROXY_ATTR_PREFIX", "compute_proxies", "compute_proxy", "search_proxies"]

PROXIES: tuple[str, ...] = ("synflow", "naswot", "grad_norm", "snip", "jacob_cov")

_JACOB_COV_K = 1e-5
_RELUS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU)
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
             nn.FeatureAlphaDropout)

Inputs = torch.Tensor | Sequence[torch.Tensor]


def compute_proxy(
    name: str,
    model: nn.Module,
    inputs: Inputs,
    targets: torch.Tensor,
    *,
    parameters: Iterable[nn.Parameter] | None = None,
) -> float:
    """One zero-cost proxy of ``model`` on one batch.

    Args:
        name: One of :data:`PROXIES`.
        model: Maps ``inputs`` to logits ``(N, classes, h, w)`` (or ``AuxiliaryOutputs``);
            left unchanged.
        inputs: An ``(N, C, H, W)`` tensor or a list of such tensors (same ``N``).
        targets: ``(N, H, W)`` integer labels, 255 = ignore (used by ``grad_norm`` and
            ``snip`` only).
        parameters: Parameters of ``model`` that ``synflow``, ``grad_norm`` and ``snip``
            sum over; all of ``model``'s by default.

    Returns:
        The score as a float, possibly non-finite (see the module docstring).

    Raises:
        ValueError: ``name`` is unknown, a parameter does not belong to ``model``, or
            ``naswot`` finds no ReLU module.
    """
    _check_names([name])
    return _PROXY_FUNCTIONS[name](model, _as_list(inputs), targets, parameters)


def compute_proxies(
    model: nn.Module,
    inputs: Inputs,
    targets: torch.Tensor,
    names: Iterable[str] = PROXIES,
    *,
    parameters: Iterable[nn.Parameter] | None = None,
) -> dict[str, float]:
    """Several zero-cost proxies of ``model`` on the same batch.

    Args:
        model: As in :func:`compute_proxy`.
        inputs: As in :func:`compute_proxy`.
        targets: As in :func:`compute_proxy`.
        names: Proxies to compute, all of :data:`PROXIES` by default; checked before any
            is computed.
        parameters: As in :func:`compute_proxy`.

    Returns:
        ``{name: score}`` in the order of ``names``.

    Raises:
        ValueError: As in :func:`compute_proxy`.
    """
    names = list(names)
    _check_names(names)
    if parameters is not None:
        parameters = list(parameters)
    return {name: compute_proxy(name, model, inputs, targets, parameters=parameters)
            for name in names}


#: Prefix of the trial user attrs holding the proxies (``proxy_synflow``, ...).
PROXY_ATTR_PREFIX = "proxy_"


def search_proxies(network: StemDecoderNetwork, data: SearchData,
                   names: Iterable[str] = PROXIES, *, batch_size: int = 8) -> dict[str, float]:
    """The proxies of a search network, as every trial computes them before training.

    The generated part (``network.decoder``) is scored on the cached stem features of the
    first ``batch_size`` meta-train images and their labels, summing over its own
    parameters: the stem is the same in every architecture, so it only adds a constant.

    Example:
        >>> scores = search_proxies(network, data, ["synflow", "naswot"])  # doctest: +SKIP
    """
    count = min(batch_size, len(data.train_labels))
    device = module_device(network.decoder, default=data.train_labels.device)
    features = [f[:count].to(device).float() for f in data.train_features]
    labels = data.train_labels[:count].to(device).long()
    return compute_proxies(network.decoder, features, labels, names,
                           parameters=network.decoder.parameters())


def _check_names(names: Iterable[str]) -> None:
    for name in names:
        if name not in PROXIES:
            raise ValueError(f"unknown proxy {name!r}; known proxies: {', '.join(PROXIES)}")


def _as_list(inputs: Inputs) -> tuple[list[torch.Tensor], bool]:
    if isinstance(inputs, torch.Tensor):
        return [inputs.detach()], False
    tensors = [t.detach() for t in inputs]
    if not tensors:
        raise ValueError("inputs is an empty list")
    return tensors, True


def _forward(model: nn.Module, xs: list[torch.Tensor], is_list: bool) -> torch.Tensor:
    outputs = model(list(xs) if is_list else xs[0])
    if isinstance(outputs, AuxiliaryOutputs):
        outputs = outputs.logits
    return outputs


def _working_copy(
    model: nn.Module,
    parameters: Iterable[nn.Parameter] | None,
    device: torch.device,
    *,
    train: bool,
    dtype: torch.dtype | None = None,
) -> tuple[nn.Module, list[nn.Parameter]]:
    """A deep copy on ``device`` whose selected parameters alone require gradients."""
    names = {id(p): n for n, p in model.named_parameters()}
    if parameters is None:
        selected_names = list(names.values())
    else:
        selected_names = []
        for p in parameters:
            if id(p) not in names:
                raise ValueError("every tensor in parameters must be a parameter of model")
            if names[id(p)] not in selected_names:
                selected_names.append(names[id(p)])
    work = copy.deepcopy(model).to(device)
    if dtype is not None:
        work = work.to(dtype)
    work.train(train)
    for module in work.modules():
        if isinstance(module, _DROPOUTS):
            module.eval()
    for p in work.parameters():
        p.grad = None
        p.requires_grad_(False)
    by_name = dict(work.named_parameters())
    selected = [by_name[n] for n in selected_names]
    for p in selected:
        p.requires_grad_(True)
    return work, selected


def _gradients(output: torch.Tensor, params: list[nn.Parameter]) -> list[torch.Tensor]:
    if not params:
        return []
    grads = torch.autograd.grad(output, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def _total(values: list[torch.Tensor]) -> float:
    """Sum of 0-d tensors in float64, with one device synchronisation."""
    if not values:
        return 0.0
    return float(torch.stack([v.double() for v in values]).sum())


def _loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    labels = targets.to(logits.device)
    if labels.shape[-2:] != logits.shape[-2:]:
        labels = F.interpolate(labels[:, None].float(), size=tuple(logits.shape[-2:]),
                               mode="nearest")[:, 0]
    return F.cross_entropy(logits, labels.long(), ignore_index=IGNORE_INDEX)


def _loss_gradients(
    model: nn.Module,
    inputs: tuple[list[torch.Tensor], bool],
    targets: torch.Tensor,
    parameters: Iterable[nn.Parameter] | None,
) -> tuple[list[nn.Parameter], list[torch.Tensor]]:
    xs, is_list = inputs
    work, params = _working_copy(model, parameters, xs[0].device, train=True)
    with torch.enable_grad():
        loss = _loss(_forward(work, xs, is_list), targets)
        return params, _gradients(loss, params)


def _synflow(
    model: nn.Module,
    inputs: tuple[list[torch.Tensor], bool],
    targets: torch.Tensor,
    parameters: Iterable[nn.Parameter] | None,
) -> float:
    xs, is_list = inputs
    work, params = _working_copy(model, parameters, xs[0].device, train=False,
                                 dtype=torch.float64)
    with torch.no_grad():
        for p in work.parameters():
            p.abs_()
    ones = [torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device) for x in xs]
    with torch.enable_grad():
        r = _forward(work, ones, is_list).sum()
        grads = _gradients(r, params)
    return _total([(p.detach() * g).abs().sum() for p, g in zip(params, grads)])


def _grad_norm(
    model: nn.Module,
    inputs: tuple[list[torch.Tensor], bool],
    targets: torch.Tensor,
    parameters: Iterable[nn.Parameter] | None,
) -> float:
    _, grads = _loss_gradients(model, inputs, targets, parameters)
    return _total([g.double().norm() for g in grads])


def _snip(
    model: nn.Module,
    inputs: tuple[list[torch.Tensor], bool],
    targets: torch.Tensor,
    parameters: Iterable[nn.Parameter] | None,
) -> float:
    params, grads = _loss_gradients(model, inputs, targets, parameters)
    return _total([(p.detach().double() * g.double()).abs().sum()
                   for p, g in zip(params, grads)])


def _naswot(
    model: nn.Module,
    inputs: tuple[list[torch.Tensor], bool],
    targets: torch.Tensor,
    parameters: Iterable[nn.Parameter] | None,
) -> float:
    xs, is_list = inputs
    work, _ = _working_copy(model, [], xs[0].device, train=True)
    n = xs[0].shape[0]
    kernel = torch.zeros((n, n), dtype=torch.float64, device=xs[0].device)

    def hook(module: nn.Module, args: object, output: torch.Tensor) -> None:
        codes = (output.detach() > 0).reshape(n, -1).double()
        kernel.add_(codes @ codes.T).add_((1 - codes) @ (1 - codes).T)

    handles = [m.register_forward_hook(hook) for m in work.modules() if isinstance(m, _RELUS)]
    if not handles:
        raise ValueError("naswot needs ReLU modules in the model; found none")
    with torch.no_grad():
        _forward(work, xs, is_list)
    for handle in handles:
        handle.remove()
    return float(torch.linalg.slogdet(kernel).logabsdet)


def _jacob_cov(
    model: nn.Module,
    inputs: tuple[list[torch.Tensor], bool],
    targets: torch.Tensor,
    parameters: Iterable[nn.Parameter] | None,
) -> float:
    xs, is_list = inputs
    work, _ = _working_copy(model, [], xs[0].device, train=True)
    xs = [x.clone().requires_grad_(True) for x in xs]
    with torch.enable_grad():
        y = _forward(work, xs, is_list).sum()
        grads = torch.autograd.grad(y, xs, allow_unused=True)
    n = xs[0].shape[0]
    rows = [(torch.zeros_like(x) if g is None else g).reshape(n, -1) for x, g in zip(xs, grads)]
    jacobian = torch.cat(rows, dim=1).double().cpu().numpy()
    return _jacob_cov_score(jacobian)


def _jacob_cov_score(jacobian: np.ndarray) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.atleast_2d(np.corrcoef(jacobian))
    if not np.all(np.isfinite(corr)):
        return float("nan")
    v = np.linalg.eigvalsh(corr)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(-np.sum(np.log(v + _JACOB_COV_K) + 1.0 / (v + _JACOB_COV_K)))


_ProxyFunction = Callable[
    [nn.Module, tuple[list[torch.Tensor], bool], torch.Tensor, Iterable[nn.Parameter] | None],
    float,
]
_PROXY_FUNCTIONS: dict[str, _ProxyFunction] = {
    "synflow": _synflow,
    "naswot": _naswot,
    "grad_norm": _grad_norm,
    "snip": _snip,
    "jacob_cov": _jacob_cov,
}
