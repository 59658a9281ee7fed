# Hoof Hearted: one image for the web server (daphne) and the collect worker.
# GPU access comes from the NVIDIA Container Toolkit at run time (it mounts libnvidia-ml and
# nvidia-smi into the container); nothing NVIDIA is baked into the image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY hoofhearted ./hoofhearted
COPY monitoring ./monitoring
COPY dashboard ./dashboard
COPY templates ./templates
COPY static ./static
COPY manage.py ./
RUN pip install . && python manage.py collectstatic --noinput -v0

RUN useradd --system --home /app hoofhearted
# The collector runs as root in compose to read other users' process details;
# the web server does not need to.
USER hoofhearted
EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "hoofhearted.asgi:application"]
