"""Where every benchmark's table goes: the console and its file in bench/results/ (the committed figures),
ending with the command that made it."""

import shlex
import sys
from pathlib import Path


def publish(text: str, path: Path) -> None:
    text = text.rstrip("\n") + f"\n\ncommand: {shlex.join(['python', *sys.argv])}\n"
    print(text, end="")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
