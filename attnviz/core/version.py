"""attnviz's version, written into every export's ``summary.json``."""

__version__ = "0.1.0"
