# One image for every process: `roster api`, `roster consume`, `roster relay`, `roster migrate`.
# The process is chosen by the command (see k8s/). Kafka and PostgreSQL are external here:
# set ROSTER_KAFKA_BOOTSTRAP_SERVERS and ROSTER_DATABASE_URL.
FROM python:3.11-slim AS build
WORKDIR /app
COPY requirements.lock pyproject.toml ./
RUN python -m venv /venv \
 && /venv/bin/pip install --no-cache-dir --disable-pip-version-check -r requirements.lock
COPY service service
COPY consumers consumers
COPY schemas schemas
COPY migrations migrations
COPY alembic.ini README.md ./
RUN /venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps .

FROM python:3.11-slim
RUN useradd --system --uid 10001 roster
COPY --from=build /venv /venv
COPY --from=build /app /app
WORKDIR /app
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 ROSTER_HTTP_HOST=0.0.0.0
USER 10001
EXPOSE 8000 9101 9102
ENTRYPOINT ["roster"]
CMD ["api"]
