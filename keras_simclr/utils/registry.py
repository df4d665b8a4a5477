"""Named registries behind the plug-in points: objectives, view makers, backbone families.

A `Registry` maps a name (what a flag such as `--loss` takes) to a factory, a class or a
function. `build(name, **arguments)` calls the factory with the arguments its signature
names and leaves out those that only other entries of the registry take: an app passes every
option it has (an objective's temperature, a ResNet's stem) and each entry receives what it
declares, so an objective without a temperature or a backbone without stems fits in, while
an argument that no entry declares (a misspelt one) is still an error.
"""
from __future__ import annotations

import inspect
from typing import Callable


def declared_parameters(factory: Callable) -> frozenset[str]:
    """Names of the keyword arguments `factory` declares (its `**kwargs` not included)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(name for name, parameter in inspect.signature(factory).parameters.items()
                     if parameter.kind in kinds)


class Registry(dict):
    """name -> factory, with clear errors for duplicate and unknown names.

    Args:
        kind: what an entry is, for messages ("objective", "view maker", ...).
        check: called with each factory before it is registered; raises TypeError when the
            factory is not of this kind.
    """

    def __init__(self, kind: str, check: Callable[[Callable], None] | None = None):
        super().__init__()
        self.kind = kind
        self._check = check

    def register(self, name: str, factory: Callable) -> Callable:
        """Add `factory` under `name`; returns it. Raises ValueError when the name is taken."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self:
            raise ValueError(f"a {self.kind} named {name!r} is already registered "
                             f"({self[name]!r}); choose another name")
        if not callable(factory):
            raise TypeError(f"a {self.kind} factory must be callable, got {factory!r}")
        if self._check is not None:
            self._check(factory)
        self[name] = factory
        return factory

    def lookup(self, name: str) -> Callable:
        """The factory of `name`; raises ValueError naming the registered ones."""
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {sorted(self)}")
        return self[name]

    def build(self, name: str, **arguments):
        """`factory(**arguments it declares)`; raises TypeError for arguments no entry takes."""
        factory = self.lookup(name)
        known = frozenset().union(*(declared_parameters(f) for f in self.values()))
        unknown = sorted(set(arguments) - known)
        if unknown:
            raise TypeError(f"no {self.kind} takes the argument(s) {unknown}")
        taken = declared_parameters(factory)
        return factory(**{key: value for key, value in arguments.items() if key in taken})
