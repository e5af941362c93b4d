# The predict function: onnxruntime and numpy, never pandas or scikit-learn.
FROM python:3.11.7-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY milkprice ./milkprice
COPY functions/predict ./functions/predict
RUN pip install --no-cache-dir .
ENV PYTHONUNBUFFERED=1 WORKERS=1 THREADS=8 OMP_NUM_THREADS=1
EXPOSE 8080
CMD ["functions-framework", "--target", "predict", "--source", "functions/predict/main.py", "--host", "0.0.0.0", "--port", "8080"]
