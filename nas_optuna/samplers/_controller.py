"""The LSTM controller (policy) behind :class:`~nas_optuna.samplers.PPOSampler`.

A 2-layer LSTM reads one input per decision: a learned start vector for the first decision,
then the embedding of the previous decision's action. Every *decision kind* — a parameter
name together with its number of choices — has its own embedding table and its own linear
softmax head, created lazily the first time the kind is seen. Their initial weights depend
only on the controller's seed and the kind itself, never on when the kind was first seen,
so a controller rebuilt from the storage gets the very same weights (see ``_ppo.py``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Fills the logits of other decisions' heads in the batched forward. Finite (unlike -inf)
# so that ``p * log p`` and its gradient stay 0 instead of NaN there.
_MASKED_LOGIT = -1e9


@dataclass
class _Rollout:
    """The controller's state inside one running trial (define-by-run sampling)."""

    #: (h, c) per LSTM layer, ``None`` before the first decision.
    hidden: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    #: (decision id, action) of the previous decision, the next step's input.
    previous: tuple[int, int] | None = None


class _Controller(nn.Module):
    """LSTM policy over a growing set of decision kinds.

    Args:
        hidden_size: LSTM width, also the size of the start input and the embeddings.
        num_layers: Number of stacked LSTM layers.
        init_range: Every parameter starts uniform in ``[-init_range, init_range]``.
        seed: Seed of the initial weights (of the core and of every lazily created head).
    """

    def __init__(self, hidden_size: int, num_layers: int, init_range: float, seed: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.init_range = init_range
        self.seed = seed
        self.lstm = nn.LSTM(hidden_size, hidden_size, num_layers)
        self.start = nn.Parameter(torch.empty(1, hidden_size))
        self.embeddings = nn.ModuleList()
        self.heads = nn.ModuleList()
        self.kinds: list[tuple[str, int]] = []
        self._ids: dict[tuple[str, int], int] = {}
        self._sizes = torch.zeros(0, dtype=torch.long)
        self._offsets = torch.zeros(0, dtype=torch.long)
        generator = torch.Generator().manual_seed(seed % 2**63)
        with torch.no_grad():
            for parameter in [*self.lstm.parameters(), self.start]:
                parameter.uniform_(-init_range, init_range, generator=generator)
        self._alias_weights()

    def kind_id(self, name: str, n_choices: int) -> int:
        """The id of a decision kind, creating its embedding and head on first sight."""
        key = (name, n_choices)
        if key in self._ids:
            return self._ids[key]
        # crc32 rather than hash(): Python salts string hashes per process, and the head
        # must come out the same in every process that rebuilds the policy.
        kind_seed = (self.seed * 1_000_003 + zlib.crc32(f"{n_choices}:{name}".encode())) % 2**63
        generator = torch.Generator().manual_seed(kind_seed)
        embedding = nn.Embedding(n_choices, self.hidden_size)
        head = nn.Linear(self.hidden_size, n_choices)
        with torch.no_grad():
            for parameter in [*embedding.parameters(), *head.parameters()]:
                parameter.uniform_(-self.init_range, self.init_range, generator=generator)
        self.embeddings.append(embedding)
        self.heads.append(head)
        self.kinds.append(key)
        self._ids[key] = len(self.kinds) - 1
        self._sizes = torch.tensor([n for _, n in self.kinds])
        self._offsets = torch.cumsum(self._sizes, 0) - self._sizes
        self._embedding_rows.append(embedding.weight.detach())
        self._head_weights.append((head.weight.detach(), head.bias.detach()))
        return self._ids[key]

    def kind_parameters(self, kind: int) -> list[nn.Parameter]:
        """The parameters owned by one decision kind (embedding and head)."""
        return [*self.embeddings[kind].parameters(), *self.heads[kind].parameters()]

    def _alias_weights(self) -> None:
        # Detached aliases of the parameters for step(): they share storage, so they see
        # every in-place optimizer update, and ops on them record no autograd graph, which
        # saves a no_grad context per step. Plain lists also skip nn.Module lookups.
        self._cell_weights = [
            tuple(getattr(self.lstm, f"{name}_l{layer}").detach()
                  for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            for layer in range(self.lstm.num_layers)
        ]
        self._start = self.start.detach()
        self._embedding_rows = [embedding.weight.detach() for embedding in self.embeddings]
        self._head_weights = [(head.weight.detach(), head.bias.detach()) for head in self.heads]

    def __getstate__(self) -> dict:
        # Pickled aliases would come back as copies, cut off from the parameters.
        state = self.__dict__.copy()
        for name in ("_cell_weights", "_start", "_embedding_rows", "_head_weights"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._alias_weights()

    def step(self, rollout: _Rollout, kind: int) -> torch.Tensor:
        """Advances ``rollout`` by one decision of ``kind``; returns that decision's logits.

        The caller must set ``rollout.previous`` to the chosen action before the next step.
        """
        if rollout.previous is None:
            inputs = self._start
        else:
            previous_kind, action = rollout.previous
            inputs = self._embedding_rows[previous_kind][action].unsqueeze(0)
        if rollout.hidden is None:
            zeros = inputs.new_zeros(1, self.hidden_size)
            rollout.hidden = [(zeros, zeros)] * len(self._cell_weights)
        # torch.lstm_cell per layer: the same arithmetic as nn.LSTM, at a fifth of the
        # per-call overhead of the module (which dominates at batch 1).
        for layer, weights in enumerate(self._cell_weights):
            rollout.hidden[layer] = torch.lstm_cell(inputs, rollout.hidden[layer], *weights)
            inputs = rollout.hidden[layer][0]
        return F.linear(inputs[0], *self._head_weights[kind])

    def log_probs(
        self, kinds: torch.Tensor, actions: torch.Tensor, with_entropy: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probabilities and entropies of whole action sequences, teacher-forced.

        One LSTM pass over the padded batch replaces ``T * B`` single steps.

        Args:
            kinds: ``[T, B]`` decision-kind ids (any valid id on padded positions).
            actions: ``[T, B]`` actions (0 on padded positions).

        Returns:
            ``[T, B]`` log-probabilities of ``actions`` and ``[T, B]`` entropies (``None``
            unless ``with_entropy``); padded positions hold garbage for the caller to mask.
        """
        batch = kinds.shape[1]
        table = torch.cat([embedding.weight for embedding in self.embeddings])
        flat = self._offsets[kinds] + actions
        previous = F.embedding(flat[:-1], table)
        inputs = torch.cat([self.start.unsqueeze(0).expand(1, batch, -1), previous])
        output, _ = self.lstm(inputs)
        weight = torch.cat([head.weight for head in self.heads])
        bias = torch.cat([head.bias for head in self.heads])
        logits = F.linear(output, weight, bias)  # [T, B, all heads' columns]
        # Each position keeps only its own head's columns, gathered into a [T, B, widest]
        # block; shorter heads are padded with a logit that softmax turns into 0.
        width = int(self._sizes.max())
        slots = torch.arange(width)
        own = slots < self._sizes[kinds].unsqueeze(-1)
        columns = (self._offsets[kinds].unsqueeze(-1) + slots).clamp(max=logits.shape[-1] - 1)
        log_p = torch.log_softmax(
            logits.gather(-1, columns).masked_fill(~own, _MASKED_LOGIT), dim=-1
        )
        chosen = log_p.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        if not with_entropy:
            return chosen, None
        entropy = -(log_p.exp() * log_p).masked_fill(~own, 0.0).sum(-1)
        return chosen, entropy
