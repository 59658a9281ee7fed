# Hoof Hearted: one image for the web server (daphne) and the collect worker, plus an nginx
# image carrying the site config and the static files of the very same build.
#   docker build -t hoofhearted .                      # the app (the last stage)
#   docker build -t hoofhearted-nginx --target nginx .
# GPU access comes from the NVIDIA Container Toolkit at run time (it mounts libnvidia-ml and
# nvidia-smi into the container): nothing NVIDIA is baked into the image.

# --- build: install into a virtualenv and collect the static files ------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY pyproject.toml README.md ./
COPY hoofhearted ./hoofhearted
COPY monitoring ./monitoring
COPY dashboard ./dashboard
RUN pip install --no-cache-dir .
COPY templates ./templates
COPY static ./static
COPY manage.py ./
RUN python manage.py collectstatic --noinput -v0

# --- nginx in front: TLS, the WebSocket upgrade, static files (deploy/nginx) ---------------
FROM nginx:1.27-alpine AS nginx
COPY deploy/nginx/hoofhearted.conf /etc/nginx/conf.d/default.conf
# In compose the web server is the `web` service; IPv6 listeners only where the host has it.
RUN sed -i -e 's/server 127.0.0.1:8000;/server web:8000;/' -e '/listen \[::\]/d' \
        /etc/nginx/conf.d/default.conf
COPY --from=build /app/staticfiles /srv/hoofhearted/static

# --- the app: web server by default, `python manage.py collect` for the worker -------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    STATIC_ROOT=/app/staticfiles \
    LOG_FORMAT=json
RUN useradd --system --uid 10001 --no-create-home --home-dir /app hoofhearted \
    && install -d -o 10001 -g 10001 -m 700 /data
# /data: the one writable place, for the embedded SQLite (DB_NAME=/data/db.sqlite3) when the
# image runs alone; compose uses PostgreSQL.
VOLUME ["/data"]
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
USER 10001
EXPOSE 8000
# daphne on uvloop (hoofhearted/web.py); its default closes each WebSocket after 24 h (code 1000: the page would not reconnect).
# -v 0: no plain-text access log among the JSON lines (nginx logs every request).
CMD ["python", "-m", "hoofhearted.web", "-b", "0.0.0.0", "-p", "8000", "--websocket_timeout", "-1", "-v", "0", "hoofhearted.asgi:application"]
