# One image for every process: `roster api|consume|relay|poll|migrate|redrive|...` (the command
# picks the process; see k8s/ and compose.yaml). Kafka and PostgreSQL are external: set
# ROSTER_KAFKA_BOOTSTRAP_SERVERS and ROSTER_DATABASE_URL.
#
# Only requirements.lock is installed: no dev extra (no embedded PostgreSQL, no test or lint tools)
# and not the dev package (`devstack/` is never copied in). The root filesystem can be mounted
# read-only: the code is compiled at build time and nothing writes outside /tmp at run time (the
# API's multi-worker metrics go to a temporary folder; give the container a writable /tmp).
#
# BASE is any Python 3.11 image with `python3` and its `venv` module on Debian bookworm (glibc):
# the official slim image by default; scripts/image builds with a local Debian one instead.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# A CA bundle for pip, where the build's network needs one (scripts/image mounts the machine's);
# a build argument of this stage only, so nothing of it reaches the image.
ARG PIP_CERT
WORKDIR /src
COPY requirements.lock ./
# The wheels of the pinned packages, in a virtual environment that the runtime stage copies whole.
# pip's cache (/root/.cache/pip) stays in this stage; scripts/image mounts a persistent one there.
RUN python3 -m venv /venv \
 && /venv/bin/pip install --only-binary=:all: --no-deps -r requirements.lock \
 && /venv/bin/pip check
COPY pyproject.toml README.md alembic.ini ./
COPY schemas schemas
COPY service service
COPY consumers consumers
COPY migrations migrations
# The project itself, without its dependencies (they are the pins above) and without `devstack/`,
# which is not in the build context's copy. Compiled to bytecode here: the root may be read-only.
# pip and setuptools leave the environment once they are done: nothing installs at run time.
RUN /venv/bin/pip install --no-deps --no-compile . \
 && /venv/bin/pip uninstall --yes --quiet pip setuptools \
 && /venv/bin/python3 -m compileall -q /venv/lib \
 && mkdir -p /app && cp -r alembic.ini migrations /app/

FROM ${BASE}
# A fixed numeric uid/gid, so that Kubernetes' runAsNonRoot can check it without a passwd lookup.
RUN groupadd --system --gid 10001 roster \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin roster
COPY --from=build /venv /venv
# alembic.ini and the revisions, found from the working directory by `roster migrate`.
COPY --from=build /app /app
WORKDIR /app
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TMPDIR=/tmp \
    ROSTER_HTTP_HOST=0.0.0.0
USER 10001:10001
# The API, then the /metrics of the consumer, the relay and the poller.
EXPOSE 8000 9101 9102 9103
ENTRYPOINT ["roster"]
CMD ["api"]
