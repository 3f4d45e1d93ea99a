"""coredoctor: why a crash leaves no core dump, and what to change so the next one does."""

__version__ = "0.1.0"
