"""Progressive resizing (data.image_size_schedule): the training crop size as a function of the epoch.

FFCV's ResNet recipes: `start` up to `start_epoch`, then linear to `end` at
`end_epoch`, rounded to a multiple of 32 (their get_resolution), `end` after.
Small images early make those epochs cheaper; the last epochs train at the
full size. A pure function of the epoch, so resume and every loader worker
agree; evaluation keeps its own size (data.eval_image_size).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class SizeSchedule:
    start: int
    end: int
    start_epoch: int
    end_epoch: int
    multiple: int = 32

    def at(self, epoch: int) -> int:
        if epoch <= self.start_epoch:
            return self.start
        if epoch >= self.end_epoch:
            return self.end
        size = self.start + (self.end - self.start) * (epoch - self.start_epoch) / (self.end_epoch - self.start_epoch)
        return int(round(size / self.multiple)) * self.multiple


def size_schedule(cfg, image_size: int) -> SizeSchedule:
    """The recipe's schedule; a constant one at `image_size` when it is off."""
    if not cfg.start:
        return SizeSchedule(image_size, image_size, 0, 0)
    return SizeSchedule(cfg.start, cfg.end, cfg.start_epoch, cfg.end_epoch, cfg.multiple)
