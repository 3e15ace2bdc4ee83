"""The wandb dashboard, from rank 0 only, never fatal.

The run's id (bigbatch's run id, kept in every checkpoint) is the wandb run id,
with resume="allow": a resumed or fault-restarted run continues the same wandb
run, and a new run (a fresh id) never reuses an old one. Mode: the recipe's
`track.wandb`, or with `auto` the WANDB_MODE environment variable, else online
when an API key is configured (WANDB_API_KEY or a netrc entry for
api.wandb.ai), else offline into RUN_DIR/wandb (upload later with `wandb sync`).
Any wandb failure - import, network, key - prints one warning and turns the
tracker off; metrics.jsonl keeps everything either way.

Steps: charts are drawn against bigbatch's optimizer step, logged as the metric
`step` (define_metric), never as wandb's own step. wandb's step only increases
and rows at a step it has already seen are dropped, so a group restarted from
an earlier checkpoint would lose the replayed range; with its own step left to
count rows, the replayed steps appear (twice where the first attempt logged
them too, as they happened).
"""

import netrc
import os
from pathlib import Path

from bigbatch.trainer.recipe.schema import TrackConfig
from bigbatch.trainer.records.track import tracker_off


def resolve_mode(cfg: TrackConfig) -> str:
    if cfg.wandb != "auto":
        return cfg.wandb
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        return "online" if netrc.netrc().authenticators("api.wandb.ai") else "offline"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return "offline"


class WandbTracker:
    def __init__(self, cfg: TrackConfig, run_dir: Path, run_id: str, config: dict):
        self.run = None
        self.mode = resolve_mode(cfg)
        if self.mode == "disabled":
            return
        try:
            import wandb

            (Path(run_dir) / "wandb").mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(project=cfg.project, entity=cfg.entity or None, id=run_id, resume="allow",
                                  dir=str(run_dir), mode=self.mode, config=config, name=Path(run_dir).name,
                                  settings=wandb.Settings(silent=True, console="off"))
            self.run.define_metric("step")
            self.run.define_metric("*", step_metric="step")
        except Exception as e:  # wandb must never be the reason a run dies
            self._off(e)

    def _off(self, error: BaseException) -> None:
        tracker_off("wandb", error)
        self.run = None
        _let_go_of_wandb()

    def log(self, record: dict) -> None:
        """A metrics.jsonl record: numbers go to the run's history at its step; events update the summary."""
        if self.run is None:
            return
        try:
            numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                       and k not in ("step", "time")}
            if "event" in record:  # start/finish/...: numbers, strings and the hardware table to the summary
                self.run.summary.update({**numbers, **{k: v for k, v in record.items() if k not in numbers
                                                       and k not in ("step", "time") and v is not None}})
            elif numbers:
                self.run.log({**numbers, "step": int(record["step"])})
        except Exception as e:
            self._off(e)

    def mark(self, step: int, name: str, text: str, value: float) -> None:
        """A run event at `step` (a resize): `value` as `events/NAME` in the history at that step, and its line
        in the summary (`events/NAME`, the last one)."""
        if self.run is None:
            return
        try:
            self.run.log({f"events/{name}": value, "step": step})
            self.run.summary[f"events/{name}"] = f"step {step}: {text}"
        except Exception as e:
            self._off(e)

    def finish(self) -> None:
        if self.run is None:
            return
        try:
            self.run.finish()
        except Exception as e:
            self._off(e)
        self.run = None


def _let_go_of_wandb() -> None:
    """Tear down wandb's connection to its service now, quietly: when the service died (a node's shutdown
    signals it too), wandb's own exit hook would otherwise print a traceback after the run's last line."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is None:
        return
    try:
        wandb.teardown()
    except Exception:
        pass  # the warning is said; what failed is wandb's to report, not the run's
