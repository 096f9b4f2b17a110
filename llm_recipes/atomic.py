"""Nothing half-written under a final name: write next to the target, then rename into place."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """A file to write (`w`: UTF-8 text, `wb`: bytes) next to `path`, renamed onto it when the block ends without an
    error; on an error it is removed, and `path` keeps what it had."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


@contextlib.contextmanager
def publish_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside `final`; on success it replaces `final`, on error it is removed.

    A crash never leaves a mix of old and new under `final`. In the instant between the two renames (a folder cannot
    be swapped atomically with the standard library) `final` is missing and the previous one sits at `.<name>.old`.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
# Writers that wrap the OSError (safetensors' Rust writer, torch's zip writer) keep only its text
_DISK_FULL_TEXT = re.compile(
    r"No space left on device|File too large|Disk quota exceeded|(os error|code:) (28|27|122)\b")


def is_disk_full(exc: BaseException | None) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS or _DISK_FULL_TEXT.search(str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextlib.contextmanager
def stop_cleanly_when_disk_full(prog: str) -> Iterator[None]:
    """Around a recipe's main(): a write that fails for lack of space (ENOSPC, EFBIG, EDQUOT) ends the run with one
    line and exit code 1 instead of a traceback. What was being written is never marked complete (checkpoints get
    their marker last, outputs are renamed into place last), so the last complete checkpoint or output stays usable."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - anything else is re-raised untouched
        if not is_disk_full(e):
            raise
        where = getattr(e, "filename", None) or "the output"
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        sys.stderr.write(f"{prog}: error: out of disk space writing {where} ({reason}); completed checkpoints and "
                         "outputs are kept, the unfinished one is not marked complete\n")
        raise SystemExit(1) from None
