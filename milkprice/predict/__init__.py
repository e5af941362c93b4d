"""The predict side: everything the predict function needs besides the shared contract.

Light on purpose: nothing here imports pandas, scikit-learn or the training side (a test reads
the imports), so the function starts fast and its bundle stays small.
"""
