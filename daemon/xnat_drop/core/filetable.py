"""A session's files as one sequence: a tuple in memory, or a view of files kept on disk. Pure.

The FileFacts of a 50,000-file session fill about 25 MB, held from inspection until the session
is filed. Past a bound, inspection writes them to a file in blocks (adapters/dicom/spill.py)
and the session holds a `Shelved` view of that file instead: a block of files is made again
each time a pass reaches it, and dropped after. Every pass of the core goes through the files
once, keeping only what it counts or names. `picked` makes a subset (an array of positions,
four bytes a file) and `changed` replaces a few files, so that no pass needs a list
of every file. Both also work on a tuple, which small sessions keep.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol, overload

from xnat_drop.core.model import FileFacts


class Shelf(Protocol):
    """Where a spilled session's files are kept: `count` files in blocks of `block_size`."""

    @property
    def count(self) -> int: ...

    @property
    def block_size(self) -> int: ...

    def block(self, number: int) -> Sequence[FileFacts]:
        """The files of block `number`, made again from what was kept."""
        ...


class Shelved(Sequence[FileFacts]):
    """The files of a Shelf, or those at `indexes` (ascending), with `changes` by index.

    Read-only like a tuple. Equal only to itself. Safe to read from several threads: the one
    block kept for random access is replaced as a whole.
    """

    __slots__ = ("_cache", "_changes", "_indexes", "_shelf")

    def __init__(
        self,
        shelf: Shelf,
        indexes: array[int] | None = None,
        changes: Mapping[int, FileFacts] | None = None,
    ) -> None:
        self._shelf = shelf
        self._indexes = indexes
        self._changes: Mapping[int, FileFacts] = changes or {}
        self._cache: tuple[int, Sequence[FileFacts]] = (-1, ())

    def __len__(self) -> int:
        return self._shelf.count if self._indexes is None else len(self._indexes)

    def __repr__(self) -> str:
        return f"<{len(self)} files kept on disk>"

    @overload
    def __getitem__(self, position: int) -> FileFacts: ...
    @overload
    def __getitem__(self, position: slice) -> Shelved: ...
    def __getitem__(self, position: int | slice) -> FileFacts | Shelved:
        if isinstance(position, slice):
            return Shelved(self._shelf, _indexes(self._all()[position]), self._changes)
        if position < 0:
            position += len(self)
        if not 0 <= position < len(self):
            raise IndexError("file position out of range")
        index = position if self._indexes is None else self._indexes[position]
        return self._at(index)

    def __iter__(self) -> Iterator[FileFacts]:
        size = self._shelf.block_size
        if self._indexes is None:
            for number in range(-(-self._shelf.count // size)):
                start = number * size
                for offset, facts in enumerate(self._shelf.block(number)):
                    yield self._changes.get(start + offset, facts)
            return
        number = -1  # a block of our own: the shared cache is for random access
        files: Sequence[FileFacts] = ()
        for index in self._indexes:
            if index // size != number:
                number = index // size
                files = self._shelf.block(number)
            yield self._changes.get(index, files[index - number * size])

    def _at(self, index: int) -> FileFacts:
        if index in self._changes:
            return self._changes[index]
        size = self._shelf.block_size
        number, files = self._cache
        if number != index // size:
            number = index // size
            files = self._shelf.block(number)
            self._cache = (number, files)
        return files[index - number * size]

    def _all(self) -> Sequence[int]:
        return range(self._shelf.count) if self._indexes is None else self._indexes

    def picked(self, keep: Callable[[FileFacts], bool]) -> Shelved:
        """The files for which `keep` is true, in order."""
        kept = _indexes(i for i, f in zip(self._all(), self, strict=True) if keep(f))
        return Shelved(self._shelf, kept, self._changes)

    def parted(self, test: Callable[[FileFacts], bool]) -> tuple[Shelved, Shelved]:
        """(the files for which `test` is false, those for which it is true), in one pass."""
        parts: tuple[array[int], array[int]] = (_indexes(()), _indexes(()))
        for index, facts in zip(self._all(), self, strict=True):
            parts[test(facts)].append(index)
        return Shelved(self._shelf, parts[0], self._changes), Shelved(
            self._shelf, parts[1], self._changes
        )

    def changed(self, changes: Mapping[int, FileFacts]) -> Shelved:
        """These files with the ones at the given positions replaced."""
        merged = dict(self._changes)
        for position, facts in changes.items():
            merged[position if self._indexes is None else self._indexes[position]] = facts
        return Shelved(self._shelf, self._indexes, merged)


def picked(files: Sequence[FileFacts], keep: Callable[[FileFacts], bool]) -> Sequence[FileFacts]:
    """The files of `files` for which `keep` is true, in order (a tuple, or a Shelved view)."""
    if isinstance(files, Shelved):
        return files.picked(keep)
    return tuple(f for f in files if keep(f))


def parted(
    files: Sequence[FileFacts], test: Callable[[FileFacts], bool]
) -> tuple[Sequence[FileFacts], Sequence[FileFacts]]:
    """(the files for which `test` is false, those for which it is true), each in order."""
    if isinstance(files, Shelved):
        return files.parted(test)
    parts: tuple[list[FileFacts], list[FileFacts]] = ([], [])
    for facts in files:
        parts[test(facts)].append(facts)
    return tuple(parts[0]), tuple(parts[1])


def changed(files: Sequence[FileFacts], changes: Mapping[int, FileFacts]) -> Sequence[FileFacts]:
    """`files` with those at the positions in `changes` replaced."""
    if not changes:
        return files
    if isinstance(files, Shelved):
        return files.changed(changes)
    return tuple(changes.get(i, f) for i, f in enumerate(files))


def _indexes(values: Iterator[int] | Sequence[int] | tuple[()]) -> array[int]:
    """An array of file indexes, four bytes each (up to 4,294,967,295 files)."""
    return array("I", values)
