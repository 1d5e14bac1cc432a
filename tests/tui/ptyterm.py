"""Drive a command in a real pseudo-terminal and read its screen through a terminal emulator (pyte)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pyte

ROOT = Path(__file__).resolve().parents[2]


def demo_argv(*args: str) -> list[str]:
    """``python -m gossipbook demo ...``"""
    return ["-m", "gossipbook", "demo", *args]


class Term:
    """A child process on a ``width`` x ``height`` pty; ``screen`` is what a user would see."""

    def __init__(self, argv: list[str], width: int = 100, height: int = 30) -> None:
        self.screen = pyte.Screen(width, height)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = bytearray()
        self.status: int | None = None
        env = dict(os.environ, TERM="xterm-256color", COLUMNS=str(width), LINES=str(height))
        env.pop("NO_COLOR", None)
        pid, fd = pty.fork()
        if pid == 0:  # the child: exec at once (we may have threads), never return into pytest
            try:
                os.chdir(ROOT)
                os.execve(sys.executable, [sys.executable, *argv], env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
        self.eof = False

    def text(self) -> str:
        return "\n".join(self.screen.display)

    def pump(self, timeout: float) -> None:
        """Feed whatever the child writes within ``timeout`` seconds to the emulator."""
        end = time.monotonic() + timeout
        while not self.eof:
            left = end - time.monotonic()
            if left <= 0:
                return
            r, _, _ = select.select([self.fd], [], [], left)
            if not r:
                return
            try:
                data = os.read(self.fd, 1 << 16)
            except OSError:  # EIO: the child closed the terminal (it exited)
                data = b""
            if not data:
                self.eof = True
                return
            self.raw += data
            self.stream.feed(data)

    def wait_for(self, pred: Callable[[str], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not self.eof:
            self.pump(0.05)
            if pred(self.text()):
                return True
        return pred(self.text())

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code (negative: killed by that signal), or None if still running after ``timeout``."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.pump(0.05)
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.pump(0.2)
                self.status = os.waitstatus_to_exitcode(st)
                return self.status
        return None

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return self.status is None

    def close(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        try:
            os.close(self.fd)
        except OSError:
            pass
