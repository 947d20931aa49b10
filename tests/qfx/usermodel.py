"""A user's model file for the command-line tests: `qfx convert usermodel.py:build` (copied to a temp dir)."""

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv(x)).mean((2, 3))
        return torch.softmax(self.fc(self.head(x)), -1)  # softmax: stays in float with the default mappings


def build():
    torch.manual_seed(0)
    batches = [(torch.randn(2, 3, 8, 8),) for _ in range(3)]
    return Net().eval(), (torch.randn(2, 3, 8, 8),), batches


def build_two():
    torch.manual_seed(0)
    return Net().eval(), torch.randn(2, 3, 8, 8)


def bad_shape():
    return Net()


def not_a_model():
    return "model", (torch.randn(1),)


class Video(nn.Module):
    """A 3-D conv: under qnnpack torch packs it but cannot unpack it, so neither lowered model has a
    state_dict (nor can be deep-copied)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


def build_video():
    torch.manual_seed(0)
    return Video().eval(), (torch.randn(1, 3, 5, 5, 5),)


class Flattening(nn.Module):
    """`.view` of a quantized adaptive average pool's output: the quantized kernel returns it in channels-last
    strides, which `.view` refuses (`.reshape` would copy), so the converted model fails where the float one ran."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d((2, 2))
        self.fc = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv(x)))
        return self.fc(x.view(x.size(0), -1))


def build_flattening():
    torch.manual_seed(0)
    return Flattening().eval(), (torch.randn(1, 3, 8, 8),)


class Residual(nn.Module):
    """A block class of the user's own, which the traced nodes' meta names."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x) + x)


def build_residual():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 1), Residual(4), Residual(4)).eval(), (torch.randn(1, 3, 6, 6),)


class Scaled(nn.Module):
    """A Python number among the inputs: the float model takes it, prepare_fx's observer of it does not."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        return self.fc(x) * scale


def build_scaled():
    torch.manual_seed(0)
    return Scaled().eval(), (torch.randn(2, 3), 2.0)


class EditsItsInput(nn.Module):
    """Scales its input in place after reading it: each run edits the batch it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        x.mul_(5.0)
        return y


def build_editing_inputs():
    torch.manual_seed(0)
    return EditsItsInput().eval(), (torch.randn(4, 8),), [(torch.randn(4, 8),) for _ in range(3)]


class Tagger(nn.Module):
    """Token ids -> embedding -> LSTM (both stay in float under the default static mappings) -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.lstm = nn.LSTM(16, 16, batch_first=True)
        self.fc = nn.Linear(16, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(self.emb(ids))
        return self.fc(y)


def build_tagger():
    torch.manual_seed(0)
    return Tagger().eval(), (torch.randint(0, 50, (2, 7)),)


class DictInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, d: dict) -> torch.Tensor:
        return self.fc(d["x"]) + d["y"]


def build_dict_input():
    torch.manual_seed(0)
    return DictInput().eval(), ({"x": torch.randn(2, 8), "y": torch.randn(2, 4)},)


def build_exiting():
    import sys

    sys.exit(3)


class PoolsAndGelu(nn.Module):
    """No quantized module or op survives lowering (pools and a concatenation run on quantized tensors); the
    GELU between them runs in float there."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([nn.functional.adaptive_avg_pool2d(x, 2), nn.functional.max_pool2d(x, 2)], 1)
        return torch.cat([nn.functional.gelu(y), y], 1)


def build_pools_and_gelu():
    torch.manual_seed(0)
    return PoolsAndGelu().eval(), (torch.randn(2, 3, 4, 4),)


class ViewBySize(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.fc(y.reshape(x.size(0), -1)), x.shape[0] // 2


def build_view_by_size():
    torch.manual_seed(0)
    return ViewBySize().eval(), (torch.randn(2, 3, 8, 8),)
