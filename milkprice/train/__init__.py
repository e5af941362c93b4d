"""The training side: clean the raw files, build features, backtest candidates, export models.

Heavy (pandas, scikit-learn, skl2onnx): only the train function and the CLI's evaluate import it.
"""
