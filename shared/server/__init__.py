"""The gRPC gateway kit: server factory, auth and error interceptors, health and readiness."""
