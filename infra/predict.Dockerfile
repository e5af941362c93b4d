# The predict function: onnxruntime and numpy, never pandas or scikit-learn. The same image
# on every platform (README, "Deploying"): CLOUD picks the object store's SDK at build time
# (gcp, aws or azure: the pyproject extra of that name), the server listens on $PORT.
#
# Every package comes from uv.lock with its hashes: the first stage exports the requirements
# this image needs and builds the project's wheel, the second installs them with
# `pip install --require-hashes` and runs as a user of its own, not root. The base is pinned to
# a patch release of Python on a Debian release; its digest (python:...@sha256:...) pins it
# further, but reading it needs the registry, which the environment this was written in could
# not reach: add it where `docker buildx imagetools inspect` can resolve it.

FROM python:3.11.18-slim-trixie AS lock
COPY infra/uv-requirements.txt /tmp/uv-requirements.txt
RUN pip install --no-cache-dir --root-user-action=ignore --require-hashes --no-deps \
    --only-binary :all: -r /tmp/uv-requirements.txt
WORKDIR /src
COPY pyproject.toml uv.lock ./
ARG CLOUD=gcp
RUN uv export --locked --no-emit-project --extra ${CLOUD} -o requirements.txt \
    && uv export --locked --no-emit-project --only-group build -o build.txt \
    && pip install --no-cache-dir --root-user-action=ignore --require-hashes -r build.txt
COPY README.md ./
COPY milkprice ./milkprice
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

FROM python:3.11.18-slim-trixie
# Runs only inside AWS Lambda, as an extension: HTTP and events in, plain HTTP to $PORT.
COPY --from=public.ecr.aws/awsguru/aws-lambda-adapter:0.9.1 /lambda-adapter /opt/extensions/lambda-adapter
ARG CLOUD=gcp
COPY --from=lock /src/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir --root-user-action=ignore --require-hashes -r /tmp/requirements.txt
COPY --from=lock /wheels /tmp/wheels
RUN pip install --no-cache-dir --root-user-action=ignore --no-deps /tmp/wheels/milkprice-*.whl \
    && groupadd --gid 10001 milkprice \
    && useradd --uid 10001 --gid 10001 --create-home milkprice
WORKDIR /app
COPY functions/predict ./functions/predict
# Bytecode now, as pip compiled the packages': the user below cannot write it, so a cold start
# would compile the entry point every time.
RUN python -m compileall -q functions/predict
ENV PYTHONUNBUFFERED=1 WORKERS=1 THREADS=8 OMP_NUM_THREADS=1 PORT=8080 \
    MILKPRICE_CLOUD=${CLOUD} AWS_LWA_READINESS_CHECK_PATH=/v2/health/live
# numeric, so that a cluster can tell it is not root (Kubernetes' runAsNonRoot)
USER 10001:10001
EXPOSE 8080
# functions-framework reads the port from $PORT (Cloud Run and Knative set it; elsewhere 8080).
CMD ["functions-framework", "--target", "predict", "--source", "functions/predict/main.py", "--host", "0.0.0.0"]
