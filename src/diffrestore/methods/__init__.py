"""Restoration methods, each a registered :class:`diffrestore.methods.base.Method`.

Importing this package registers the built-in methods; ``base.get_method(name)`` finds them. A new method
is one module here that defines its options and solver and decorates its class with ``@register``, plus
one import line below.
"""

from diffrestore.methods import adir, ddnm, ddnm_hq, resshift, shred  # noqa: F401  (registration)
from diffrestore.methods.base import METHODS, Method, Observation, Prior, get_method, register

__all__ = ["METHODS", "Method", "Observation", "Prior", "get_method", "register"]
