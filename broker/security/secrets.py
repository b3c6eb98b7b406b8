"""Secrets out of sight: the password of a URL and private keys are cut from any text
that leaves a process for people (log lines, error lines, pages, metrics).

Standard library only: the pilot logs through it too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

#: ``scheme://user:password@``: the password is what lies between the user's ``:`` and ``@``.
URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*:)[^\s@]+@")
PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S
)
HIDDEN = "**"
#: Files holding secrets (private keys, batch scripts exporting a broker URL) are the owner's.
SECRET_MODE = 0o600


def redact(text: str) -> str:
    """``text`` with every URL's password replaced by ``**`` and private keys left out."""
    if "://" in text:
        text = URL_PASSWORD.sub(rf"\g<head>{HIDDEN}@", text)
    if "PRIVATE KEY" in text:
        text = PRIVATE_KEY.sub("(a private key, not shown)", text)
    return text


def has_password(url: str) -> bool:
    """Whether any URL of ``url`` (several nodes separated by ``;``) carries a password."""
    for node in url.split(";"):
        try:
            if urlsplit(node.strip()).password:
                return True
        except ValueError:
            continue
    return False


def write_private(path: Path, data: bytes) -> None:
    """Write a secret readable by its owner only (mode 0600), never for a moment more.

    It goes to a new file made 0600 and then takes the place of ``path``: an old
    file there with a wider mode is replaced, not written into.
    """
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_MODE)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(partial, SECRET_MODE)  # the umask may have narrowed it; never widened
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
