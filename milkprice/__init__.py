"""Milk price forecasting: shared code of the train and predict functions.

Importing the package imports nothing heavy: serving must not pay for pandas or scikit-learn.
"""

__version__ = "0.1.0"
