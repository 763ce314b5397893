"""One registry idiom for what slimtrain looks up by name: models, datasets, methods, sets, layer types.

A :class:`Registry` maps names to objects (factories, classes). Entries are added with
:meth:`Registry.register` (usable as a decorator) by the module that defines them; a registry may also name a
Python entry-point group, through which installed third-party packages add entries without being imported by
slimtrain (the engine thus never imports a plugin: the registry loads it when its name is first looked up).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Generic, TypeVar, overload

from slimtrain.errors import UnknownNameError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Names → objects of one kind.

    Args:
        kind: What the entries are, for messages (``"model"``, ``"method"``, ...).
        entry_point_group: A ``importlib.metadata`` entry-point group whose entries are loaded, once, on the
            first lookup of a name not registered in-process and on :meth:`names` (``None``: none).

    Example:
        >>> from slimtrain.registry import Registry
        >>> shapes = Registry("shape")
        >>> @shapes.register("square")
        ... def square(side):
        ...     return side * side
        >>> shapes.get("square")(3)
        9
    """

    def __init__(self, kind: str, *, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, T] = {}
        self._entry_points_loaded = entry_point_group is None

    @overload
    def register(self, name: str, obj: None = None, *, replace: bool = False) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T, *, replace: bool = False) -> T: ...

    def register(self, name: str, obj: T | None = None, *, replace: bool = False) -> T | Callable[[T], T]:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator that does.

        Registering the same object twice is allowed (re-imports); another object under a taken name needs
        ``replace=True``.

        Raises:
            ValueError: an empty name, or a taken name without ``replace``.
        """

        def add(value: T) -> T:
            if not name:
                raise ValueError(f"a {self.kind} needs a non-empty name")
            taken = self._entries.get(name)
            if taken is not None and taken is not value and not replace:
                raise ValueError(f"a {self.kind} named {name!r} is already registered (pass replace=True)")
            self._entries[name] = value
            return value

        return add if obj is None else add(obj)

    @contextmanager
    def temporarily(self, name: str, obj: T) -> Iterator[T]:
        """Register ``obj`` under ``name`` for the duration of a ``with`` block (tests, experiments).

        On exit the previous entry of that name is restored, or the name removed.
        """
        self._load_entry_points()
        missing = object()
        previous = self._entries.get(name, missing)
        self._entries[name] = obj
        try:
            yield obj
        finally:
            if previous is missing:
                self._entries.pop(name, None)
            else:
                self._entries[name] = previous  # type: ignore[assignment]

    @contextmanager
    def scratch(self) -> Iterator[Registry[T]]:
        """Undo, on leaving the ``with`` block, every registration made inside it (tests, experiments)."""
        self._load_entry_points()
        saved = dict(self._entries)
        try:
            yield self
        finally:
            self._entries.clear()
            self._entries.update(saved)

    def get(self, name: str) -> T:
        """The entry called ``name``.

        Raises:
            UnknownNameError: no such entry; the message lists the registered names.
        """
        if name not in self._entries:
            self._load_entry_points()
        if name not in self._entries:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._load_entry_points()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` pairs, sorted by name."""
        return [(name, self._entries[name]) for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for entry in metadata.entry_points(group=self.entry_point_group):
            if entry.name not in self._entries:
                self.register(entry.name, entry.load())
