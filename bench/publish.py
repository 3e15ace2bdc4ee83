"""Where every benchmark's table goes: the console and its file in bench/results/ (the committed figures),
ending with the command that made it."""

import json
import shlex
import sys
from pathlib import Path


def publish(text: str, path: Path) -> None:
    text = text.rstrip("\n") + f"\n\ncommand: {shlex.join(['python', *sys.argv])}\n"
    print(text, end="")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def save_store(store: dict, out: Path) -> None:
    """A bench's measured cells as JSON beside its markdown (OUT.json), for --render to draw again."""
    path = out.with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(store, indent=1) + "\n")


def publish_with_plot(store: dict, out: Path, write_plot, render) -> None:
    """Draw the store's plot (OUT.png), then publish the markdown that links it."""
    plot = out.with_suffix(".png")
    write_plot(plot, store)
    publish(render(store, plot), out)


def save_batch_plot(fig, ax, path: Path, ylabel: str, ticks: list[int] | None = None) -> None:
    """Finish a plot against the global batch (log2 axis, labelled `ticks` if given) the way every batch bench
    draws it, save, close."""
    import matplotlib.pyplot as plt

    ax.set_xscale("log", base=2)
    if ticks:
        ax.set_xticks(ticks, [str(b) for b in ticks])
        ax.minorticks_off()
    ax.set_xlabel("global batch")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
