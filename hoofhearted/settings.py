"""Django settings for Hoof Hearted, every value read from the environment in this one file.

Defaults give the one-command embedded run (SQLite, in-process channel layer). Production
sets ``DB=postgres`` and ``REDIS_URL``. A bad value fails here, naming the variable.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from hoofhearted.env import (
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_redis_url,
    env_str,
    env_time_zone,
)
from hoofhearted.exposure import listen_hosts, public_hosts

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)
# Good for a server only this machine can reach; refused below for any other.
DEVELOPMENT_SECRET_KEY = "hoofhearted-insecure-dev-key-set-SECRET_KEY-in-production"
SECRET_KEY = env_str("SECRET_KEY", DEVELOPMENT_SECRET_KEY)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

# --- Who may read: a shared read-only token for everything not asked from this machine --------
# auto: required for a request on a non-loopback address or forwarded by a proxy (nginx);
# token: required always; open: never (only behind a proxy that does its own login).
ACCESS_MODE = env_choice("HOOFHEARTED_ACCESS", "auto", ("auto", "token", "open"))
ACCESS_TOKEN = env_str("HOOFHEARTED_ACCESS_TOKEN", "")
if ACCESS_TOKEN and len(ACCESS_TOKEN) < 16:
    raise ImproperlyConfigured(
        "HOOFHEARTED_ACCESS_TOKEN is shorter than 16 characters: use a long random value "
        "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
    )
if ACCESS_MODE == "token" and not ACCESS_TOKEN:
    raise ImproperlyConfigured("HOOFHEARTED_ACCESS=token needs HOOFHEARTED_ACCESS_TOKEN")

# --- Behind TLS (nginx): secure cookies, HSTS, and trust nginx's X-Forwarded-Proto -----------
# On when an https:// origin is trusted for CSRF, as the nginx guide and compose set.
TLS_PROXY = env_bool(
    "HOOFHEARTED_TLS_PROXY", any(o.startswith("https://") for o in CSRF_TRUSTED_ORIGINS)
)
if TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    # Probes and scrapers talk to the web server directly, over plain HTTP on the inside.
    SECURE_REDIRECT_EXEMPT = [r"^api/health$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# The browsers' preload list is a decision for the whole domain, not for one monitor on it.
SILENCED_SYSTEM_CHECKS = ["security.W021"]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "monitoring",
    "dashboard",
]
# `manage.py collect` serves no HTTP: without daphne it does not load Twisted (~20 MiB of RSS).
if sys.argv[1:2] == ["collect"]:
    INSTALLED_APPS.remove("daphne")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "hoofhearted.access.AccessTokenMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "hoofhearted.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "hoofhearted.urls"
ASGI_APPLICATION = "hoofhearted.asgi.application"
WSGI_APPLICATION = "hoofhearted.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database: SQLite by default, PostgreSQL with DB=postgres -------------------------------
DB = env_choice("DB", "sqlite", ("sqlite", "postgres"))
if DB == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": env_str("DB_NAME", "hoofhearted"),
            "USER": env_str("DB_USER", "postgres"),
            "PASSWORD": env_str("DB_PASSWORD", ""),
            "HOST": env_str("DB_HOST", "localhost"),
            "PORT": env_int("DB_PORT", 5432, minimum=1, maximum=65535),
            "CONN_MAX_AGE": env_int("DB_CONN_MAX_AGE", 60, minimum=0),
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {"connect_timeout": env_int("DB_CONNECT_TIMEOUT", 5, minimum=1)},
        }
    }
    # Under daphne every request's database work runs in a thread of its own, so a persistent
    # connection is a new PostgreSQL connection per request (measured: 12 backends after 60
    # requests, +10 ms each). A web server borrows connections from a pool instead; the
    # worker keeps its per-thread connections.
    if env_bool("DB_POOL", bool(listen_hosts(sys.argv))):
        DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps them
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": 1,
            "max_size": env_int("DB_POOL_MAX_SIZE", 8, minimum=1),
            "timeout": DATABASES["default"]["OPTIONS"]["connect_timeout"],
        }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("DB_NAME", str(BASE_DIR / "db.sqlite3")),
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer: Redis when REDIS_URL is set, in-process otherwise -----------------------
REDIS_URL = env_redis_url("REDIS_URL")
# Connections one process may open to Redis (redis-py's pool stops at 100 by default and then
# raises MaxConnectionsError).
REDIS_MAX_CONNECTIONS = env_int("HOOFHEARTED_REDIS_MAX_CONNECTIONS", 1000, minimum=10)
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "max_connections": REDIS_MAX_CONNECTIONS,
                        # above the core layer's 5 s blocking pop (redis-py's default is 5 s:
                        # a quiet group then reads as a Redis timeout and a reconnect)
                        "socket_timeout": 10,
                        "socket_connect_timeout": 5,
                    }
                ],
                "capacity": 200,
                "expiry": 10,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Telemetry -------------------------------------------------------------------------------
GPU_SOURCE = env_choice(
    "HOOFHEARTED_GPU_SOURCE", "auto", ("auto", "nvml", "nvidia-smi", "nvtop", "replay", "none")
)
REPLAY_DIR = env_str("HOOFHEARTED_REPLAY_DIR", "")
REPLAY_STATE = env_choice("HOOFHEARTED_REPLAY_STATE", "load", ("idle", "load"))
NVIDIA_SMI = env_str("HOOFHEARTED_NVIDIA_SMI", "nvidia-smi")
NVTOP = env_str("HOOFHEARTED_NVTOP", "nvtop")
HOST_NAME = env_str("HOOFHEARTED_HOST_NAME", socket.gethostname())
POLL_INTERVAL_MS = env_int("POLL_INTERVAL_MS", 1000, minimum=250, maximum=3_600_000)
PROCESS_INTERVAL_MS = env_int("HOOFHEARTED_PROCESS_INTERVAL_MS", 2000, minimum=250)
SLOW_INTERVAL_MS = env_int("HOOFHEARTED_SLOW_INTERVAL_MS", 10000, minimum=250)
# NVML's cumulative and slow-moving figures (energy, ECC, PCIe replays, memory temperature,
# modes, power limits), and PCIe throughput where the driver has no byte counters (its
# sampling call spends ~20 ms per direction in the driver; 0: only while someone looks).
COUNTER_INTERVAL_MS = env_int("HOOFHEARTED_COUNTER_INTERVAL_MS", 60_000, minimum=1000)
PCIE_INTERVAL_MS = env_int("HOOFHEARTED_PCIE_INTERVAL_MS", 300_000, minimum=0)
# The host's busiest processes (a walk over all of /proc, the costliest host read) this often.
TOP_PROCESSES_INTERVAL_MS = env_int("HOOFHEARTED_TOP_PROCESSES_INTERVAL_MS", 10000, minimum=250)

# --- The web server of `manage.py serve` (./scripts/run) --------------------------------------
SERVE_HOST = env_str("HOST", "127.0.0.1")
SERVE_PORT = env_int("PORT", 8000, minimum=1, maximum=65535)

# A web server other machines can reach must not sign sessions with a published key, nor
# serve anyone without the token: refuse to start, in one line naming what to set.
PUBLIC_HOSTS = public_hosts(sys.argv, serve_host=SERVE_HOST)
if PUBLIC_HOSTS and SECRET_KEY == DEVELOPMENT_SECRET_KEY:
    raise ImproperlyConfigured(
        f"SECRET_KEY is not set: the built-in development key is refused when listening on "
        f"{', '.join(PUBLIC_HOSTS)} (set SECRET_KEY to a long random value)"
    )
if PUBLIC_HOSTS and ACCESS_MODE == "auto" and not ACCESS_TOKEN:
    raise ImproperlyConfigured(
        f"HOOFHEARTED_ACCESS_TOKEN is not set: it is required when listening on "
        f"{', '.join(PUBLIC_HOSTS)} (or HOOFHEARTED_ACCESS=open behind a proxy with its own login)"
    )

# --- Worker, storage and history ---------------------------------------------------------------
# Group the worker publishes live snapshots and alerts to.
TELEMETRY_GROUP = env_str("HOOFHEARTED_TELEMETRY_GROUP", "telemetry")
# Samples are written in batches this often.
FLUSH_INTERVAL_MS = env_int("HOOFHEARTED_FLUSH_INTERVAL_MS", 2000, minimum=100)
# Snapshots held in memory while the database is away (at 1 Hz: 3600 = one hour of outage).
BUFFER_SNAPSHOTS = env_int("HOOFHEARTED_BUFFER_SNAPSHOTS", 3600, minimum=10)
# Events and alert changes held while the database is away (their own queue: never dropped first).
BUFFER_RECORDS = env_int("HOOFHEARTED_BUFFER_RECORDS", 10000, minimum=10)
# Ingest into PostgreSQL with COPY (faster); off: bulk INSERTs as on SQLite.
INGEST_COPY = env_bool("HOOFHEARTED_INGEST_COPY", True)
# Running figures of open GPU process sessions (last seen, means, peak) are rewritten at most
# this often (sample time; 0: every flush). New and closed sessions are written at once.
SESSION_REFRESH_S = env_int("HOOFHEARTED_SESSION_REFRESH_S", 10, minimum=0)
# Retention of each resolution.
RETENTION_RAW_HOURS = env_int("HOOFHEARTED_RETENTION_RAW_HOURS", 48, minimum=1)
RETENTION_MINUTE_DAYS = env_int("HOOFHEARTED_RETENTION_MINUTE_DAYS", 90, minimum=1)
RETENTION_HOUR_DAYS = env_int("HOOFHEARTED_RETENTION_HOUR_DAYS", 730, minimum=1)
# How often the worker rolls up and prunes.
MAINTENANCE_INTERVAL_S = env_int("HOOFHEARTED_MAINTENANCE_INTERVAL_S", 300, minimum=10)
# Most rows one prune DELETE removes, so a first prune of a big table never locks it for long.
PRUNE_CHUNK_ROWS = env_int("HOOFHEARTED_PRUNE_CHUNK_ROWS", 20000, minimum=100)
# Recent window every roll-up recomputes, to take in samples written late (default: the
# worker's outage buffer at POLL_INTERVAL_MS, plus one maintenance interval).
ROLLUP_LOOKBACK_S = env_int(
    "HOOFHEARTED_ROLLUP_LOOKBACK_S",
    BUFFER_SNAPSHOTS * POLL_INTERVAL_MS // 1000 + MAINTENANCE_INTERVAL_S,
    minimum=0,
)
# A host whose newest stored sample is older than this is stale (health 503, /metrics drops its
# figures). The latest snapshot is rewritten each flush, so allow a few flushes and ticks.
STALE_AFTER_S = env_int(
    "HOOFHEARTED_STALE_AFTER_S",
    max(10, 3 * (FLUSH_INTERVAL_MS + POLL_INTERVAL_MS) // 1000),
    minimum=1,
)
# How often the worker re-reads thresholds and the allow-list edited in admin.
RULES_REFRESH_S = env_int("HOOFHEARTED_RULES_REFRESH_S", 30, minimum=1)
# How long a stopping worker keeps retrying a database that is down before giving up its buffer.
WORKER_STOP_TIMEOUT_S = env_int("HOOFHEARTED_WORKER_STOP_TIMEOUT_S", 15, minimum=0)
# Reopen the GPU source this often to find hot-plugged GPUs (0: only when the source is in trouble).
GPU_RESCAN_S = env_int("HOOFHEARTED_GPU_RESCAN_S", 300, minimum=0)

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_time_zone("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles"))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Logs: one line per event on stderr, JSON lines for log collectors (LOG_FORMAT=json) ------
# JSON lines carry timestamp (UTC), level, logger, message and any context passed as `extra`.
LOG_FORMAT = env_choice("LOG_FORMAT", "plain", ("plain", "json"))
LOG_LEVEL = env_choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": True,
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}
