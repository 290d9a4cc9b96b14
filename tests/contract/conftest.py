import pytest

from tests.conftest import claimed_redis_db


@pytest.fixture(scope="module")
def redis_url():
    """A real Redis DB of this module's own, empty before and after."""
    with claimed_redis_db() as url:
        yield url
