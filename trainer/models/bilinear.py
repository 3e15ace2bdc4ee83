"""model.head: bilinear - second-order pooling of a backbone's last feature map (the lecture's "Bilinear Feature").

The head: a 1x1 convolution to N = `model.head_channels` channels (+ BN + ReLU,
the reduction layer of iSQRT-COV), then per image the N x N matrix of channel
products over the M spatial positions, then its upper triangle (N(N+1)/2
values) to the classifier.
- `model.head_isqrt_iters: 0`: bilinear pooling (Lin et al. 2015), B = X X^T / M,
  then signed square root and L2 normalization of the vector, as the paper.
- `model.head_isqrt_iters: K > 0`: iSQRT-COV (Li et al. 2018): the covariance
  S = X I_bar X^T with I_bar = (I - 11^T / M) / M, pre-normalized by its trace,
  K coupled Newton-Schulz iterations Y <- Y T, Z <- T Z with T = (3I - Z Y) / 2
  (Y -> A^(1/2)), then post-compensated by sqrt(tr S): an approximate matrix
  square root, S^(1/2), trainable end to end with matrix products only (the
  paper uses K = 5).

Any catalogue backbone: its final classifier (trainer/step/clipping.py's
`classifier`) becomes the identity, and the head reads the last feature map
whose channels are the classifier's inputs, caught by a forward hook found
with one dry run at build time.
"""

import torch
import torch.nn as nn

from bigbatch.trainer.errors import RecipeError
from bigbatch.trainer.step.clipping import classifier


def isqrt_cov(x: torch.Tensor, iters: int) -> torch.Tensor:
    """(B, N, M) features -> (B, N, N) approximate square roots of their covariances (iSQRT-COV)."""
    b, n, m = x.shape
    centred = x - x.mean(-1, keepdim=True)
    cov = centred @ centred.transpose(1, 2) / m
    trace = cov.diagonal(dim1=1, dim2=2).sum(-1).clamp(min=1e-12).view(b, 1, 1)
    eye = torch.eye(n, device=x.device, dtype=x.dtype).expand(b, n, n)
    y, z = cov / trace, eye
    for _ in range(iters):
        t = 0.5 * (3 * eye - z @ y)
        y, z = y @ t, t @ z
    return y * trace.sqrt()


def bilinear_pool(x: torch.Tensor) -> torch.Tensor:
    """(B, N, M) features -> (B, N, N) = X X^T / M (Lin et al. 2015)."""
    return x @ x.transpose(1, 2) / x.shape[-1]


class BilinearHead(nn.Module):
    def __init__(self, in_channels: int, channels: int, num_classes: int, isqrt_iters: int):
        super().__init__()
        self.isqrt_iters = isqrt_iters
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels),
                                    nn.ReLU(inplace=True))
        rows, cols = torch.triu_indices(channels, channels)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.fc = nn.Linear(len(rows), num_classes)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        x = self.reduce(feature_map).flatten(2).float()  # second-order statistics in fp32
        if self.isqrt_iters:
            vector = isqrt_cov(x, self.isqrt_iters)[:, self.rows, self.cols]
        else:
            vector = bilinear_pool(x)[:, self.rows, self.cols]
            vector = torch.nn.functional.normalize(vector.sign() * vector.abs().add(1e-12).sqrt(), dim=1)
        return self.fc(vector.to(feature_map.dtype))


class WithBilinearHead(nn.Module):
    """A backbone whose classifier is replaced by a BilinearHead on its last feature map."""

    def __init__(self, backbone: nn.Module, feature_module: nn.Module, in_channels: int, channels: int,
                 num_classes: int, isqrt_iters: int):
        super().__init__()
        self.backbone = backbone
        self.head = BilinearHead(in_channels, channels, num_classes, isqrt_iters)
        self._features: torch.Tensor | None = None
        feature_module.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        self._features = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._features = None
        self.backbone(x)  # its pooled features go unused: the head reads the map the hook kept
        features, self._features = self._features, None
        return self.head(features)


def _replace(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is old:
                setattr(parent, name, new)
                return


def with_bilinear_head(model: nn.Module, name: str, num_classes: int, in_chans: int, image_size: int,
                       channels: int, isqrt_iters: int) -> nn.Module:
    head = classifier(model)
    if not isinstance(head, nn.Linear):
        raise RecipeError(f"model.head: {name} has no final nn.Linear classifier to replace with a bilinear head")
    width = head.in_features
    outputs: list[tuple[nn.Module, torch.Size]] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: outputs.append((mod, o.shape))
                                     if isinstance(o, torch.Tensor) else None) for m in model.modules()]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(2, in_chans, image_size, image_size))
    model.train(was_training)
    for hook in hooks:
        hook.remove()
    pools = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d)
    maps = [(m, s) for m, s in outputs if len(s) == 4 and s[1] == width
            and not isinstance(m, pools) and "pool" not in type(m).__name__.lower()]
    if not maps or maps[-1][1][2] * maps[-1][1][3] < 2:
        found = f"{tuple(maps[-1][1][2:])}" if maps else "none"
        raise RecipeError(f"model.head: {name} at {image_size} px has no feature map of {width} channels larger "
                          f"than 1x1 before its classifier (found: {found}); use a larger data.image_size")
    _replace(model, head, nn.Identity())
    return WithBilinearHead(model, maps[-1][0], width, channels, num_classes, isqrt_iters)
