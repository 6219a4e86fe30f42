"""Data files on disk: the folder of a data set, checksums, and downloads from official mirrors."""

import hashlib
import http.client
import os
import pathlib
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from .source import DataError


def resolve_root(root: str | os.PathLike | None, env: str, default: str | os.PathLike) -> pathlib.Path:
    """The folder of a data set: `root` if given, else `$env` if set, else `default`.

    **Arguments:**

    - `root`: the folder given by the caller (config field `data.root`), or `None` / `""`.
    - `env`: the name of the environment variable consulted next.
    - `default`: the folder used otherwise (`~` is expanded).

    **Returns:**

    The absolute folder.
    """
    if root is None or str(root) == "":
        root = os.environ.get(env) or default
    return pathlib.Path(root).expanduser().resolve()


def write_atomically(target: pathlib.Path, save: Callable[[Any], None]) -> None:
    """Write `target` through a temporary file beside it and a rename, so that a crash or a kill
    leaves either the old file or the whole new one, never a part.

    **Arguments:**

    - `target`: the file to write.
    - `save`: `save(out)` writes the content into the binary file object `out`.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            save(out)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomically(target: pathlib.Path, text: str) -> None:
    """`write_atomically` of a UTF-8 text."""
    write_atomically(target, lambda out: out.write(text.encode()))


def file_digest(path: pathlib.Path, algorithm: str) -> str:
    """The hex digest (`"sha256"`, `"md5"`, ...) of a file, read in chunks."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def missing_message(
    title: str,
    folder: pathlib.Path,
    missing: Sequence[str],
    reason: str,
    *,
    what: str,
    mirrors: Sequence[str],
    env: str,
    slug: str,
    hint: str = "",
) -> str:
    """The message of missing files: which files to put in which folder, and where they come from.

    **Arguments:**

    - `title`: the data set, e.g. `"MNIST"`.
    - `folder`: the folder searched.
    - `missing`: the names of the missing files.
    - `reason`: why they were not downloaded.
    - `what`: what to put there, e.g. `"the .gz archives, not decompressed"`.
    - `mirrors`: the official download locations (base URLs).
    - `env`: the environment variable naming another folder.
    - `slug`: the folder name shown in the example path, e.g. `"mnist"`.
    - `hint`: a last sentence (or `""`).
    """
    lines = "\n".join(f"  {folder / name}" for name in missing)
    others = f" (or {', '.join(mirrors[1:])})" if len(mirrors) > 1 else ""
    placeholder = f"/path/to/{slug}"
    text = (
        f"{title} files missing ({reason}). Put these official files ({what}) here:\n{lines}\n"
        f"They are available from {mirrors[0]}{others}. To use another folder, set the environment "
        f"variable {env}={placeholder} or the config field data.root={placeholder}."
    )
    return f"{text} {hint}" if hint else text


def download(
    name: str,
    folder: pathlib.Path,
    mirrors: Sequence[str],
    verify: Callable[[pathlib.Path, str], object],
    error: type[DataError],
    timeout: float = 30.0,
) -> None:
    """Download one official file into `folder`, through a temporary file and an atomic rename.

    The downloaded bytes are verified by `verify` before they are renamed into place; a failed or
    refused download leaves no partial file and no newly created empty folder behind.

    **Arguments:**

    - `name`: the file name, appended to each mirror's base URL.
    - `folder`: the destination folder (created if needed).
    - `mirrors`: base URLs tried in order.
    - `verify`: `verify(path, name)` raises `error` when the file is not the official one.
    - `error`: the exception raised when every mirror failed (with each mirror's failure).
    - `timeout`: seconds per connection attempt.
    """
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as failure:  # a file in the path, a read-only root: the caller's message says where
        raise error(f"the folder {folder} cannot be made to download {name} into ({failure})") from None
    errors = []
    for base in mirrors:
        url = base + name
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
        except OSError as failure:
            raise error(f"the folder {folder} cannot be written to download {name} ({failure})") from None
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, out)
            verify(pathlib.Path(tmp), name)
            os.replace(tmp, folder / name)
            return
        except (urllib.error.URLError, OSError, http.client.HTTPException, error) as failure:
            errors.append(f"{url}: {failure}")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    for path in created:  # leave no empty folders behind
        if path.exists() and not any(path.iterdir()):
            path.rmdir()
    raise error("; ".join(errors))
