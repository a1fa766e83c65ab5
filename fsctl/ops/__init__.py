"""Operations: Prometheus metrics, health endpoints, structured logs, production serving."""
