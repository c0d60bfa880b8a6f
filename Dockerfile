# devline: stream processors and worker supervisor in one image (`devline run`).
#
#   docker build -t devline:local .
#   docker run --rm -e DEVLINE_BOOTSTRAP=kafka:29092 devline:local
#
# Configuration is DEVLINE_* environment variables (see `devline --help`).

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what `pip install .` needs: the build sees no local venv, caches or broker data.
# README.m[d] copies the README when there is one (pyproject names it) and is no error if not.
COPY pyproject.toml README.m[d] ./
COPY devline ./devline
COPY agents ./agents
COPY streams ./streams
COPY schemas ./schemas
RUN pip install . \
    && useradd --create-home --uid 10001 devline \
    && mkdir -p /data/out /data/state \
    && chown -R devline:devline /data

USER devline
WORKDIR /data
ENV DEVLINE_WORKSPACE=/data/out \
    DEVLINE_DATA_DIR=/data/state

CMD ["devline", "run"]
