"""Graceful stop: a signal or a stop file asks the run to checkpoint at the next step
boundary and end `stopped`; a second signal ends it at once."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

logger = logging.getLogger(__name__)
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Set by a signal or by the presence of a stop file; read at every step boundary."""

    def __init__(self, flag_file: Path) -> None:
        self.flag_file = flag_file
        self._signalled = 0

    @property
    def requested(self) -> bool:
        return self._signalled > 0 or self.flag_file.exists()

    @property
    def signalled(self) -> bool:
        """A signal (not the stop file) asked this process to stop."""
        return self._signalled > 0

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._signalled += 1
        if self._signalled > 1:
            logger.warning("second %s: stopping now", signal.Signals(signum).name)
            raise KeyboardInterrupt
        logger.warning("%s: saving a checkpoint at the next step, then stopping (send it "
                       "again to stop at once)", signal.Signals(signum).name)

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Handle SIGTERM/SIGINT while the block runs (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
