"""An epoch counter that follows Keras' callbacks without being fooled by their extra calls.

Keras 3 calls ``on_epoch_begin`` and ``on_epoch_end`` around every epoch, plus an unpaired
``on_epoch_end`` when ``fit``/``evaluate`` reset their iterator before the first epoch. A plain
counter would then skip epoch 0. Manual loops, on the other hand, often call only
``on_epoch_end``. The rule that serves both: an ``on_epoch_end`` without an open epoch advances
tentatively, and an ``on_epoch_begin`` that directly follows it (no batch read in between) takes
it back, because that pattern is Keras' reset, not the end of an epoch of training.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EpochClock:
    epoch: int = 0
    _open: bool = False  # on_epoch_begin seen, on_epoch_end not yet
    _tentative: bool = False  # the last advance came from an unpaired on_epoch_end

    def begin(self) -> None:
        if self._tentative:
            self.epoch -= 1
        self._open, self._tentative = True, False

    def end(self) -> None:
        self.epoch += 1
        self._tentative = not self._open
        self._open = False

    def batch_read(self) -> None:
        """A batch was read: an earlier unpaired end really ended an epoch of a manual loop."""
        self._tentative = False

    def set(self, epoch: int) -> None:
        self.epoch, self._open, self._tentative = epoch, False, False
