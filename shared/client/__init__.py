"""The Python SDK: settings resolution, a typed sync `Client`, its asyncio twin `AsyncClient`,
and their error.

Imports nothing server-side (only `shared` for the generated stubs, grpc and protobuf), so it
ships to callers as is.

    from shared.client import Client, ClientSettings
    with Client(ClientSettings.resolve()) as c:
        print(c.ocr_recognize(open("page.png", "rb").read()).text)
"""

from shared.client.aio import AsyncClient
from shared.client.errors import JobmeshClientError
from shared.client.sdk import DEFAULT_TIMEOUT_S, TERMINAL, Client, job_response, job_state
from shared.client.settings import ClientSettings, ConfigError

__all__ = [
    "AsyncClient",
    "DEFAULT_TIMEOUT_S",
    "TERMINAL",
    "Client",
    "ClientSettings",
    "ConfigError",
    "JobmeshClientError",
    "job_response",
    "job_state",
]
