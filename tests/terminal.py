"""A real pseudo-terminal for console tests: a command in a private tmux server, its screen read as a person
would see it (capture-pane), the server ended by its own socket (never anyone else's)."""

import os
import re
import shlex
import subprocess
import time
import uuid
from pathlib import Path

BAR = re.compile(r"(\d+)/(\d+) \[")  # tqdm's "n/total [elapsed<eta" field


class Terminal:
    def __init__(self, command: list[str], cwd: Path, env: dict | None = None, width: int = 140,
                 height: int = 40):
        self.socket = f"bigbatch-test-{uuid.uuid4().hex[:8]}"
        self.rc_file = Path(f"/tmp/{self.socket}.rc")
        config = Path(f"/tmp/{self.socket}.conf")
        config.write_text("set -g remain-on-exit on\nset -g history-limit 50000\n")
        shell = f"cd {shlex.quote(str(cwd))} && {shlex.join(command)}; echo $? > {self.rc_file}"
        subprocess.run(["tmux", "-L", self.socket, "-f", str(config), "new-session", "-d", "-x", str(width),
                        "-y", str(height), shell], check=True, env={**os.environ, **(env or {})})
        config.unlink()

    def screen(self, history: bool = False) -> str:
        """What the terminal shows now (with history: everything that scrolled off too)."""
        args = ["tmux", "-L", self.socket, "capture-pane", "-p", "-J"] + (["-S", "-"] if history else [])
        text = subprocess.run(args, check=True, capture_output=True, text=True).stdout
        return "\n".join(line for line in text.split("\n") if not line.startswith("Pane is dead"))  # tmux's own

    def bar_positions(self, timeout_s: float, every_s: float = 0.5) -> list[int]:
        """The bar's step counts seen while the command runs (one per look at the screen)."""
        seen: list[int] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.rc_file.exists():
            found = BAR.findall(self.screen())
            if found:
                seen.append(int(found[-1][0]))
            time.sleep(every_s)
        return seen

    def wait(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while not self.rc_file.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the command did not finish within {timeout_s} s:\n{self.screen()}")
            time.sleep(0.2)
        time.sleep(0.2)  # the last output reaches the pane before the exit status is written
        return int(self.rc_file.read_text())

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)
        self.rc_file.unlink(missing_ok=True)
