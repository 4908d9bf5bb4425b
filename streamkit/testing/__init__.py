"""streamkit.testing: run an App's agents on in-memory topics, without a broker, with event
time and processing time under the test's control. See docs/testing.md.

    from streamkit.testing import TestDriver

    with TestDriver(app) as driver:
        driver.send(orders, {"id": 1, "amount": 250}, key="o-1")
        assert driver.read_values(big_orders) == [{"id": 1, "amount": 250.0, "flag": "big"}]
"""

from streamkit.testing.driver import START_TIME, AsyncTestDriver, DriverFailed
from streamkit.testing.sync import TestDriver
from streamkit.testing.views import Output, TableView, WindowView

__all__ = [
    "START_TIME",
    "AsyncTestDriver",
    "DriverFailed",
    "Output",
    "TableView",
    "TestDriver",
    "WindowView",
]
