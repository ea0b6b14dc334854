"""The user guide's import path: `from utils.analysis import TransformerAnalyzer`.

The analyzer lives in utils/observe/analysis.py (with the other tools that read a model's
activation cache); this module keeps the guide's line working.
"""

from utils.observe.analysis import TransformerAnalyzer

__all__ = ["TransformerAnalyzer"]
