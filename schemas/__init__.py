"""The contract of the bus: event envelope, event schemas and outcome measures (DESIGN §2-3).

``envelope`` (CloudEvents on Kafka), ``events`` (pydantic models per type and version),
``registry`` (decode/encode, upcasting), ``measures`` (outcome ranges and scoring) and
``generate`` (JSON Schema and AsyncAPI files). Nothing here does I/O; services import it.
"""
