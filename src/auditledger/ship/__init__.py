"""Shipping audit logs to SIEMs and storage, resumably (Kestra's Audit Log Shipper).

``run_shipper(ledger, spec, tenant=..., secrets=...)`` ships every event after
each exporter's stored offset and returns the task outputs;
``ship_checkpoint(spec, name, text)`` stores a signed checkpoint with every
exporter that keeps objects. Exporters are found through the entry-point group
``auditledger.exporters``; see ``docs/shipping.md``.
"""

from auditledger.ship.exporters.base import DeliveryError, Exporter
from auditledger.ship.formats import Record
from auditledger.ship.shipper import ProgressEvent, Shipper, ShipResult, run_shipper, ship_checkpoint
from auditledger.ship.spec import ExporterSpec, Secrets, ShipperSpec, parse_duration, parse_spec

__all__ = [
    "DeliveryError",
    "Exporter",
    "ExporterSpec",
    "ProgressEvent",
    "Record",
    "Secrets",
    "ShipResult",
    "Shipper",
    "ShipperSpec",
    "parse_duration",
    "parse_spec",
    "run_shipper",
    "ship_checkpoint",
]
