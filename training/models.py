"""Networks and the serving graphs that wrap them with in-graph preprocessing."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.errors import TrainingError


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers with ReLU between them: sizes = [in, hidden..., out]."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class TinyVGG(nn.Module):
    """Two (Conv-ReLU-Conv-ReLU-MaxPool) blocks, then Flatten and one Linear layer."""

    def __init__(self, channels: int, num_classes: int, image_size: int, hidden: int = 16) -> None:
        super().__init__()
        if image_size < 4:
            raise TrainingError(f"TinyVGG needs images of at least 4x4, got {image_size}")

        def block(fan_in: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(fan_in, hidden, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(hidden, hidden, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(block(channels), block(hidden))
        side = image_size // 2 // 2
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(hidden * side * side, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # type: ignore[no-any-return]


class ResNet18Classifier(nn.Module):
    """torchvision resnet18 with a new final layer; `frozen` trains only that layer."""

    def __init__(self, num_classes: int, frozen: bool = False) -> None:
        super().__init__()
        from torchvision.models import resnet18

        self.backbone = resnet18(weights=None)
        self.backbone.fc = nn.Linear(self.backbone.fc.in_features, num_classes)
        self.frozen = frozen
        if frozen:
            for name, parameter in self.backbone.named_parameters():
                parameter.requires_grad = name.startswith("fc.")

    def load_backbone(self, state: dict[str, Tensor]) -> int:
        """Load checked backbone weights (see `read_resnet18_weights`); return the tensor count."""
        self.backbone.load_state_dict(state, strict=False)
        return len(state)

    def train(self, mode: bool = True) -> ResNet18Classifier:
        super().train(mode)
        if self.frozen:  # keep frozen BatchNorm statistics fixed too
            self.backbone.eval()
            self.backbone.fc.train(mode)
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)  # type: ignore[no-any-return]


def _row(values: Sequence[float]) -> Tensor:
    return torch.tensor([list(values)], dtype=torch.float32)


def _safe_std(std: Tensor) -> Tensor:
    return torch.where(std < 1e-8, torch.ones_like(std), std)


class TabularClassifierGraph(nn.Module):
    """features [B, F] raw FP32 -> probabilities [B, K]; standardization is in the graph."""

    mean: Tensor
    std: Tensor

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", _row(mean))
        self.register_buffer("std", _safe_std(_row(std)))

    def logits(self, features: Tensor) -> Tensor:
        return self.net((features - self.mean) / self.std)  # type: ignore[no-any-return]

    def training_loss(self, features: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(self.logits(features), targets)

    def forward(self, features: Tensor) -> Tensor:
        return torch.softmax(self.logits(features), dim=1)


class TabularRegressorGraph(nn.Module):
    """features [B, F] raw FP32 -> prediction [B, 1] in target units."""

    mean: Tensor
    std: Tensor
    target_mean: Tensor
    target_std: Tensor

    def __init__(
        self,
        net: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        target_mean: float,
        target_std: float,
    ) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", _row(mean))
        self.register_buffer("std", _safe_std(_row(std)))
        self.register_buffer("target_mean", torch.tensor([[target_mean]], dtype=torch.float32))
        self.register_buffer("target_std", _safe_std(torch.tensor([[target_std]])))

    def standardized(self, features: Tensor) -> Tensor:
        return self.net((features - self.mean) / self.std)  # type: ignore[no-any-return]

    def training_loss(self, features: Tensor, targets: Tensor) -> Tensor:
        scaled = (targets.view(-1, 1) - self.target_mean) / self.target_std
        return F.mse_loss(self.standardized(features), scaled)

    def forward(self, features: Tensor) -> Tensor:
        return self.standardized(features) * self.target_std + self.target_mean


class ImageClassifierGraph(nn.Module):
    """images [B, C, H, W] UINT8 -> probabilities [B, K]: /255, normalize, net, softmax."""

    mean: Tensor
    std: Tensor

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def normalize(self, images: Tensor) -> Tensor:
        return (images.to(torch.float32) / 255.0 - self.mean) / self.std

    def logits(self, images: Tensor) -> Tensor:
        return self.net(self.normalize(images))  # type: ignore[no-any-return]

    def training_loss(self, images: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(self.logits(images), targets)

    def forward(self, images: Tensor) -> Tensor:
        return torch.softmax(self.logits(images), dim=1)


class LSTMForecasterGraph(nn.Module):
    """series [B, W, 1] raw FP32 -> forecast [B, H] in the series' units.

    The graph scales with statistics of the training split: each step enters the LSTM as its
    standardized level and its change from the step before (in units of the typical such
    change; 0 for the window's first step). Both are causal, known when the step's value
    arrives, so the streaming forecaster (`LSTMStepGraph`) runs the same network one reading
    at a time. A linear head on the last hidden state forecasts each step's change from the
    last value, in units of that step's typical change, so an untrained head is the naive
    forecast and training learns what to add to it.
    """

    mean: Tensor
    std: Tensor
    step_scale: Tensor
    change_scale: Tensor

    def __init__(
        self,
        horizon: int,
        mean: float,
        std: float,
        step_scale: float,
        change_scale: Sequence[float],
        hidden: int = 32,
        layers: int = 1,
    ) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size=2, hidden_size=hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, horizon)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", _safe_std(torch.tensor(std, dtype=torch.float32)))
        self.register_buffer("step_scale", _safe_std(torch.tensor(step_scale, dtype=torch.float32)))
        self.register_buffer("change_scale", _safe_std(_row(change_scale)))

    def scaled_change(self, series: Tensor) -> Tensor:
        steps = torch.cat(
            [torch.zeros_like(series[:, :1, :]), series[:, 1:, :] - series[:, :-1, :]], dim=1
        )
        features = torch.cat([(series - self.mean) / self.std, steps / self.step_scale], dim=2)
        hidden, _ = self.lstm(features)
        return self.head(hidden[:, -1, :])  # type: ignore[no-any-return]

    def training_loss(self, series: Tensor, targets: Tensor) -> Tensor:
        wanted = (targets - series[:, -1, :]) / self.change_scale
        return F.mse_loss(self.scaled_change(series), wanted)

    def forward(self, series: Tensor) -> Tensor:
        return series[:, -1, :] + self.scaled_change(series) * self.change_scale


class LSTMStepGraph(nn.Module):
    """The windowed forecaster's trained network, one reading at a time, its state carried
    outside (Triton's implicit state): equal to `LSTMForecasterGraph` on the last `window`
    readings once `window` readings have gone in.

    value [B, 1], h and c [B, W, hidden], previous [B, 1], count [B, 1] -> forecast [B, H],
    and the next h, c, previous, count.

    The windowed network starts from a zero state `W` readings back, so one running LSTM
    state (which remembers every reading) cannot reproduce it. This graph keeps `W` states,
    "lanes": lane k starts afresh at every reading n with n = k (mod W), so at each reading
    exactly one lane has run over the last W readings from zero, as the windowed network
    does; that lane forecasts and starts afresh. Before W readings, the lane that started
    with the first reading forecasts from all readings so far. `count` is the readings
    before this one, kept below 2W so that FP32 holds it exactly.
    """

    lanes: Tensor
    mean: Tensor
    std: Tensor
    step_scale: Tensor
    change_scale: Tensor

    def __init__(self, windowed: LSTMForecasterGraph, window: int) -> None:
        super().__init__()
        lstm = windowed.lstm
        if lstm.num_layers != 1:
            raise TrainingError("the streaming forecaster needs a one-layer LSTM")
        self.window = window
        self.hidden = lstm.hidden_size
        weights = {name: lstm.get_parameter(name).detach() for name, _ in lstm.named_parameters()}
        self.w_ih = nn.Parameter(weights["weight_ih_l0"].clone())
        self.w_hh = nn.Parameter(weights["weight_hh_l0"].clone())
        self.bias = nn.Parameter(weights["bias_ih_l0"] + weights["bias_hh_l0"])
        self.head = nn.Linear(lstm.hidden_size, windowed.head.out_features)
        self.head.load_state_dict(windowed.head.state_dict())
        for name in ("mean", "std", "step_scale", "change_scale"):
            self.register_buffer(name, getattr(windowed, name).detach().clone())
        self.register_buffer("lanes", torch.arange(window, dtype=torch.float32).view(1, -1))

    def _modulo(self, values: Tensor) -> Tensor:
        return values - self.window * torch.floor(values / self.window)

    def forward(
        self, value: Tensor, h: Tensor, c: Tensor, previous: Tensor, count: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        position = self._modulo(count - self.lanes)  # [B, W]: readings each lane has had
        fresh = (position == 0) | (count == 0)
        step = torch.where(fresh, torch.zeros_like(position), (value - previous) / self.step_scale)
        level = ((value - self.mean) / self.std).expand_as(step)
        features = torch.stack([level, step], dim=2)  # [B, W, 2]
        gates = features @ self.w_ih.t() + h @ self.w_hh.t() + self.bias
        i, f, g, o = gates.chunk(4, dim=2)
        c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_next = torch.sigmoid(o) * torch.tanh(c_next)
        done = (position == self.window - 1).to(h.dtype).unsqueeze(2)  # [B, W, 1]
        last = (h_next * done).sum(dim=1)
        forecast = value + self.head(last) * self.change_scale
        kept = 1 - done
        following = count + 1
        count_next = torch.where(
            following >= self.window, self.window + self._modulo(following), following
        )
        return forecast, h_next * kept, c_next * kept, value, count_next


def read_resnet18_weights(path: Path) -> dict[str, Tensor]:
    """Read a resnet18 state dict (e.g. ImageNet) safely and check it fits; fc is left out."""
    from torchvision.models import resnet18

    if not path.is_file():
        raise TrainingError(f"weights file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the error below says what is wrong
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or damaged files
        text = " ".join(str(exc).split()) or type(exc).__name__
        reason = text.split(". ")[0]
        raise TrainingError(f"cannot load weights {path}: {reason}") from exc
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise TrainingError(f"weights {path} are not a state dict of tensors")
    renamed = {str(k).removeprefix("module."): v for k, v in loaded.items()}
    state = {k: v for k, v in renamed.items() if not k.startswith("fc.")}
    own = {k: v for k, v in resnet18(weights=None).state_dict().items() if not k.startswith("fc.")}
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    wrong_shape = sorted(k for k in state if k in own and state[k].shape != own[k].shape)
    if missing or unexpected or wrong_shape:
        example = (missing or unexpected or wrong_shape)[0]
        raise TrainingError(
            f"weights {path} do not fit resnet18: {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(wrong_shape)} mis-shaped tensors "
            f"(e.g. {example!r})"
        )
    return state
