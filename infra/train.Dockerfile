# The train function (both triggers) and the scheduler/bridge service share this image.
FROM python:3.11.7-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY milkprice ./milkprice
COPY functions/train ./functions/train
RUN pip install --no-cache-dir '.[train,local]'
ENV PYTHONUNBUFFERED=1
EXPOSE 8081
CMD ["functions-framework", "--target", "train_http", "--source", "functions/train/main.py", "--host", "0.0.0.0", "--port", "8081"]
