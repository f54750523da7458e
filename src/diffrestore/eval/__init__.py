"""Evaluation harness: protocols, method adapters, the run loop and its report (``diffrestore eval``).

Why a package of its own: benchmark numbers are only worth publishing when every method saw the same
observation and every choice is recorded; these modules keep that logic in one place for the CLI, scripts
and tests (``run_eval(load_protocol("set5_sr4"), "report/")``).
"""

from diffrestore.eval.methods import METHODS, MethodOutput, MethodSpec, Problem, register_method
from diffrestore.eval.protocol import Protocol, builtin_protocols, load_protocol
from diffrestore.eval.runner import run_eval

__all__ = [
    "METHODS",
    "MethodOutput",
    "MethodSpec",
    "Problem",
    "Protocol",
    "builtin_protocols",
    "load_protocol",
    "register_method",
    "run_eval",
]
