"""An example workflow platform (FastAPI + SQLAlchemy) audited with auditledger's integrations."""
