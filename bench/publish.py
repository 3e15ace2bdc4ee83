"""Where every benchmark's table goes: the console and its file in bench/results/ (the committed figures)."""

from pathlib import Path


def publish(text: str, path: Path) -> None:
    print(text, end="" if text.endswith("\n") else "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")
