# The train function, one target for everything (train_service): health on GET, every
# platform's events on /events, the HTTP trigger elsewhere. The same image on every platform
# (README, "Deploying"): CLOUD picks the object store's SDK at build time (gcp, aws or azure:
# the pyproject extra of that name), the server listens on $PORT. The local extra is here for
# the upload bridge and scheduler (`milkprice events`, in compose and on Knative).
FROM python:3.11.7-slim
# Runs only inside AWS Lambda, as an extension: HTTP and events in, plain HTTP to $PORT.
COPY --from=public.ecr.aws/awsguru/aws-lambda-adapter:0.9.1 /lambda-adapter /opt/extensions/lambda-adapter
ARG CLOUD=gcp
WORKDIR /app
COPY pyproject.toml README.md ./
COPY milkprice ./milkprice
COPY functions/train ./functions/train
RUN pip install --no-cache-dir ".[train,local,${CLOUD}]"
# One training at a time per instance; the other threads answer probes while it runs. A 5xx
# from an event fails the Lambda invocation, so that Lambda delivers it again.
ENV PYTHONUNBUFFERED=1 WORKERS=1 THREADS=4 PORT=8080 MPLCONFIGDIR=/tmp/matplotlib \
    MILKPRICE_CLOUD=${CLOUD} AWS_LWA_ERROR_STATUS_CODES=500-599
EXPOSE 8080
# functions-framework reads the port from $PORT (Cloud Run and Knative set it; elsewhere 8080).
CMD ["functions-framework", "--target", "train_service", "--source", "functions/train/main.py", "--host", "0.0.0.0"]
