"""Chinese-CLIP's LMDB layout for image–text retrieval data (SPEC §1.3, §9.2), read and written.

One split is a folder holding two LMDB environments, exactly as `cn_clip.preprocess.build_lmdb_dataset`
writes them, so a folder written by either tool reads in the other:

    <split>/imgs    key str(image_id).encode()  → the image's base64 text, utf-8 (as in the TSV)
                    key b"num_images"            → the count, as decimal text
    <split>/pairs   key b"0" … b"N-1"            → pickle.dumps((image_id, text_id, text))
                    key b"num_samples"           → N, as decimal text

Pairs are pickled tuples. `loads_pair` reads them with an unpickler that refuses every global, so
a crafted LMDB cannot run code; a tuple of ints and strings needs none. Base64 text is decoded
strictly, in either alphabet (`decode_base64`): Chinese-CLIP decodes with `urlsafe_b64decode`,
which accepts both; a plain, non-validating `b64decode` would silently drop `-`/`_`.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path

import lmdb

from vmmlib.io.safe import InputError

NUM_IMAGES_KEY = b"num_images"
NUM_SAMPLES_KEY = b"num_samples"
PICKLE_PROTOCOL = 4  # pickle's default on Python 3.8–3.13, so our pairs are byte-identical to cn_clip's
MAP_SIZE = 1 << 40  # the builder's 1 TiB: address space only, the file grows with its content
URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")  # url-safe base64 → the standard alphabet


class UnsafePickleError(pickle.UnpicklingError, InputError):
    """A pickled pair names a global (a class or function): refused, it could run code.

    An `InputError` too; `path`/`where` name the LMDB and key when the caller knows them."""

    def __init__(self, reason: str, path: str | os.PathLike | None = None, where: str | None = None):
        InputError.__init__(self, path, reason, where)

    def __reduce__(self):
        return (type(self), (self.reason, self.path, self.where))


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise UnsafePickleError(f"refusing to load global {module}.{name} from a pickled pair")


def loads_pair(data: bytes) -> tuple:
    """Unpickle one `(image_id, text_id, text)` pair without allowing any global.

    Raises:
        UnsafePickleError: the pickle names a class or function (e.g. `os.system`).
        ValueError: it is not a 3-tuple.
    """
    pair = _NoGlobals(io.BytesIO(data)).load()
    if not isinstance(pair, tuple) or len(pair) != 3:
        raise ValueError(f"expected an (image_id, text_id, text) tuple, got {type(pair).__name__}")
    return pair


def dumps_pair(image_id, text_id, text: str) -> bytes:
    """Pickle one pair as Chinese-CLIP's builder does (a plain tuple)."""
    return pickle.dumps((image_id, text_id, text), protocol=PICKLE_PROTOCOL)


def decode_base64(text: str | bytes) -> bytes:
    """Decode base64 in the standard or the url-safe alphabet (or a mix), padding optional.

    Raises:
        ValueError: a character outside both alphabets, or a length no padding can fix.
    """
    data = text.encode("ascii", "strict") if isinstance(text, str) else bytes(text)
    data = data.strip().translate(URLSAFE_TO_STANDARD)
    if len(data) % 4 == 1:
        raise ValueError(f"base64 text of length {len(data)} cannot be valid")
    data += b"=" * (-len(data) % 4)
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error as err:
        raise ValueError(f"invalid base64: {err}") from None


def canonical_base64(text: str) -> str:
    """`text` unchanged when Chinese-CLIP's `urlsafe_b64decode` reads it; else with its padding restored."""
    text = text.strip()
    return text + "=" * (-len(text) % 4)


def open_env(path: str | Path, *, write: bool = False, sync: bool = True) -> lmdb.Environment:
    """Open one LMDB environment (a folder) for reading, or for writing (created if missing).

    Args:
        sync: flush to disk at every commit (LMDB's default). False leaves flushing to the OS (a
            killed process loses nothing; a machine crash may roll back the last commits, which
            the caller detects) until `env.sync(True)`.
    """
    path = Path(path)
    if write:
        path.mkdir(parents=True, exist_ok=True)
        return lmdb.open(str(path), map_size=MAP_SIZE, sync=sync)
    if not (path / "data.mdb").is_file():
        raise FileNotFoundError(f"no LMDB environment at {path} (expected {path / 'data.mdb'})")
    return lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False)


def put_batch(env: lmdb.Environment, items: Iterable[tuple[bytes, bytes]]) -> int:
    """Write key/value pairs in one transaction; returns how many."""
    with env.begin(write=True) as txn:
        return txn.cursor().putmulti(items)[0]  # (consumed, added)


class LMDBSplit:
    """Random access to one split in the Chinese-CLIP layout (`<split>/imgs`, `<split>/pairs`).

    The environments open lazily, once per process, so a `DataLoader` worker opens its own handle
    after the fork (an LMDB handle must not cross a fork). Either environment may be absent
    (`has_pairs`, `has_images`): a folder with images only still serves them.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not (self.root / "imgs").is_dir() and not (self.root / "pairs").is_dir():
            raise FileNotFoundError(
                f"{self.root} holds no Chinese-CLIP LMDB split (expected {self.root}/imgs and {self.root}/pairs; "
                "make them with `vmm prepare muge DATA_DIR`)"
            )
        self._envs: dict[str, lmdb.Environment] = {}
        self._pid = None
        self._counts: dict[bytes, int] = {}

    @property
    def has_pairs(self) -> bool:
        return (self.root / "pairs" / "data.mdb").is_file()

    @property
    def has_images(self) -> bool:
        return (self.root / "imgs" / "data.mdb").is_file()

    def _env(self, name: str) -> lmdb.Environment:
        if self._pid != os.getpid():
            self._envs, self._pid = {}, os.getpid()
        if name not in self._envs:
            self._envs[name] = open_env(self.root / name)
        return self._envs[name]

    def _get(self, name: str, key: bytes) -> bytes | None:
        with self._env(name).begin() as txn:
            return txn.get(key)

    def _count(self, name: str, key: bytes) -> int:
        if key not in self._counts:  # read once: the store is opened read-only
            value = self._get(name, key)
            if value is None:
                raise ValueError(
                    f"{self.root / name} has no {key.decode()} key: an unfinished or foreign LMDB"
                )
            self._counts[key] = int(value.decode("utf-8"))
        return self._counts[key]

    @property
    def num_samples(self) -> int:
        """Number of (image, text) pairs, from the `num_samples` key (0 when there is no pairs env)."""
        return self._count("pairs", NUM_SAMPLES_KEY) if self.has_pairs else 0

    @property
    def num_images(self) -> int:
        """Number of images, from the `num_images` key."""
        return self._count("imgs", NUM_IMAGES_KEY)

    def pair(self, index: int) -> tuple:
        """The `index`-th pair `(image_id, text_id, text)`, unpickled safely."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"pair {index} out of range for {self.num_samples} pairs in {self.root}")
        data = self._get("pairs", str(index).encode("utf-8"))
        if data is None:
            raise KeyError(f"{self.root / 'pairs'} lacks pair key {index}")
        try:
            return loads_pair(data)
        except (pickle.UnpicklingError, ValueError, EOFError) as err:
            raise ValueError(f"{self.root / 'pairs'} key {index}: {err}") from err

    def pairs(self) -> Iterator[tuple]:
        """Every pair in key order 0…N-1."""
        for i in range(self.num_samples):
            yield self.pair(i)

    def image_base64(self, image_id) -> str:
        """The stored base64 text of `image_id` (an int or its decimal string)."""
        data = self._get("imgs", str(image_id).encode("utf-8"))
        if data is None:
            raise KeyError(f"image {image_id} is not in {self.root / 'imgs'}")
        return data.decode("utf-8")

    def image_bytes(self, image_id) -> bytes:
        """The encoded image file (JPEG, PNG, ...) of `image_id`."""
        try:
            return decode_base64(self.image_base64(image_id))
        except ValueError as err:
            raise ValueError(f"image {image_id} in {self.root / 'imgs'}: {err}") from err

    def image_ids(self) -> list[str]:
        """Every stored image id (as the key text), in key order, without the `num_images` key."""
        with self._env("imgs").begin() as txn:
            return [k.decode("utf-8") for k in txn.cursor().iternext(values=False) if k != NUM_IMAGES_KEY]

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs = {}

    def __getstate__(self) -> dict:  # pickled into DataLoader workers without open handles
        return {"root": self.root, "_envs": {}, "_pid": None, "_counts": {}}
