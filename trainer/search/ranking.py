"""Does the supernet rank architectures the way training them alone does? Kendall's tau between the two
orders (Guo et al. 2019 and later one-shot papers report it), tau-b so that tied scores count as ties."""

import math
from collections.abc import Sequence


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of paired scores: (concordant - discordant) / sqrt(pairs untied in x * pairs untied in
    y); nan when either side is constant or there are fewer than two pairs."""
    if len(x) != len(y):
        raise ValueError(f"kendall_tau: {len(x)} scores against {len(y)}")
    concordant = discordant = untied_x = untied_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            untied_x += dx != 0
            untied_y += dy != 0
            sign = dx * dy
            concordant += sign > 0
            discordant += sign < 0
    if not untied_x or not untied_y:
        return math.nan
    return (concordant - discordant) / math.sqrt(untied_x * untied_y)
