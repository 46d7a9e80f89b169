"""Exporters: one module per destination, registered as ``auditledger.exporters`` entry points."""
