"""Shipping the audit log to external services (DESIGN: the log file is the spool).

:mod:`analyzer.sinks.shipper` reads the log from a cursor per destination and delivers at
least once; each destination is a module: :mod:`~analyzer.sinks.elasticsearch`,
:mod:`~analyzer.sinks.cloudwatch` (needs ``boto3``), :mod:`~analyzer.sinks.syslog`,
:mod:`~analyzer.sinks.http` (Splunk HEC and webhooks). :mod:`~analyzer.sinks.background`
runs shippers inside an application. Destination modules are imported on use, so the
optional dependency of one never burdens the others.
"""

from __future__ import annotations

from analyzer.sinks.shipper import (
    Cursor,
    DeliveryError,
    Record,
    SendResult,
    Shipper,
    ShipStats,
    Sink,
    is_alert,
)

__all__ = [
    "Cursor",
    "DeliveryError",
    "Record",
    "SendResult",
    "ShipStats",
    "Shipper",
    "Sink",
    "is_alert",
]
