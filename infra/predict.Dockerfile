# The predict function: onnxruntime and numpy, never pandas or scikit-learn. The same image
# on every platform (README, "Deploying"): CLOUD picks the object store's SDK at build time
# (gcp, aws or azure: the pyproject extra of that name), the server listens on $PORT.
FROM python:3.11.7-slim
# Runs only inside AWS Lambda, as an extension: HTTP and events in, plain HTTP to $PORT.
COPY --from=public.ecr.aws/awsguru/aws-lambda-adapter:0.9.1 /lambda-adapter /opt/extensions/lambda-adapter
ARG CLOUD=gcp
WORKDIR /app
COPY pyproject.toml README.md ./
COPY milkprice ./milkprice
COPY functions/predict ./functions/predict
RUN pip install --no-cache-dir ".[${CLOUD}]"
ENV PYTHONUNBUFFERED=1 WORKERS=1 THREADS=8 OMP_NUM_THREADS=1 PORT=8080 \
    MILKPRICE_CLOUD=${CLOUD} AWS_LWA_READINESS_CHECK_PATH=/v2/health/live
EXPOSE 8080
# functions-framework reads the port from $PORT (Cloud Run and Knative set it; elsewhere 8080).
CMD ["functions-framework", "--target", "predict", "--source", "functions/predict/main.py", "--host", "0.0.0.0"]
