from __future__ import annotations

import pytest
from gov_harness import Gov


@pytest.fixture
def gov() -> Gov:
    return Gov()
