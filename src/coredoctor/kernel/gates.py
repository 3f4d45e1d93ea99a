"""
Gates of the core-dump path
---------------------------
The public face of the gate model, split by job: :mod:`.table` (the ordered :class:`Gate`
records), :mod:`.predicates` (one function per gate), :mod:`.evaluator` (worlds over possible
dumpable values, merged), :mod:`.remedies` (fixes as action records) and :mod:`.reasons`
(verdict sentences from reason records). ``from coredoctor.kernel import gates`` keeps working.
"""

from coredoctor.kernel.evaluator import evaluate, evaluate_targets
from coredoctor.kernel.remedies import write_lines_cmd
from coredoctor.kernel.table import GATE_IDS, GATES, Gate
from coredoctor.kernel.world import destination_views, estimate_core_size, pattern_context

__all__ = ["Gate", "GATES", "GATE_IDS", "evaluate", "evaluate_targets", "pattern_context",
           "destination_views", "estimate_core_size", "write_lines_cmd"]
