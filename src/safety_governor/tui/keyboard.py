"""Keys from the terminal: cbreak mode (restored on exit, whatever happens) and a reader thread.

The reader only turns bytes into key names (``up``, ``down``, ``enter``, ``esc``, ``backspace``,
``space`` or the character) and posts them; what a key means is the controller's business.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

SEQUENCES = {
    b"\x1b[A": "up", b"\x1b[B": "down", b"\x1b[C": "right", b"\x1b[D": "left",
    b"\x1bOA": "up", b"\x1bOB": "down", b"\x1bOC": "right", b"\x1bOD": "left",
    b"\x1b[5~": "pageup", b"\x1b[6~": "pagedown", b"\x1b[H": "home", b"\x1b[F": "end",
}
SINGLE = {b"\r": "enter", b"\n": "enter", b"\x7f": "backspace", b"\x08": "backspace", b" ": "space",
          b"\t": "tab", b"\x1b": "esc"}


def decode(data: bytes) -> list[str]:
    """Key names in a chunk read from the terminal."""
    keys: list[str] = []
    i = 0
    while i < len(data):
        if data[i:i + 1] == b"\x1b" and i + 1 < len(data):
            for seq, name in SEQUENCES.items():
                if data.startswith(seq, i):
                    keys.append(name)
                    i += len(seq)
                    break
            else:
                # An unknown escape sequence: skip it whole (ESC [ … final byte).
                j = i + 1
                if data[j:j + 1] in (b"[", b"O"):
                    j += 1
                    while j < len(data) and not (0x40 <= data[j] <= 0x7E):
                        j += 1
                    i = j + 1
                else:
                    keys.append("esc")
                    i += 1
            continue
        byte = data[i:i + 1]
        if byte in SINGLE:
            keys.append(SINGLE[byte])
            i += 1
            continue
        # One UTF-8 character.
        length = 1
        if data[i] >= 0xC0:
            length = 2 if data[i] < 0xE0 else 3 if data[i] < 0xF0 else 4
        char = data[i:i + length].decode("utf-8", errors="ignore")
        if char and char.isprintable():
            keys.append(char)
        i += length
    return keys


@contextmanager
def cbreak(fd: int) -> Iterator[None]:
    """Keys arrive one at a time and are not echoed; the previous mode comes back on exit."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class KeyReader(threading.Thread):
    """Posts key names read from ``fd`` until ``stop`` is set (waking every ``poll`` seconds)."""

    def __init__(self, fd: int, post: Callable[[str], None], stop: threading.Event, *, poll: float = 0.25) -> None:
        super().__init__(name="governor-keys", daemon=True)
        self.fd = fd
        self.post = post
        self.stop = stop
        self.poll = poll

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                ready, _, _ = select.select([self.fd], [], [], self.poll)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                data = os.read(self.fd, 64)
            except OSError:
                return
            if not data:
                return
            for key in decode(data):
                self.post(key)
