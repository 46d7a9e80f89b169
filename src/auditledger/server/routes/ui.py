"""The web UI's pages under ``/ui`` (the package :mod:`auditledger.server.ui`)."""

from auditledger.server.ui import router

__all__ = ["router"]
