"""Azure Blob Storage: one block blob per batch (``PUT {endpoint}/{container}/{name}``).

Kestra's ``io.kestra.plugin.ee.azure.storage.LogExporter`` properties
``endpoint``, ``container``, ``sasToken``, or ``tenantId`` + ``clientId`` +
``clientSecret`` (an Entra ID service principal); plus ``logFilePrefix``,
``maxLinesPerFile``, ``format``. Requests carry ``x-ms-blob-type: BlockBlob``
and ``x-ms-version`` as the Blob service REST API requires.
"""

from __future__ import annotations

from urllib.parse import quote

from auditledger.errors import ConfigError
from auditledger.ship.exporters.auth import AZURE_AUTHORITY, TokenSource, azure_client_credentials
from auditledger.ship.exporters.base import HttpExporter
from auditledger.ship.exporters.objects import ObjectExporter
from auditledger.ship.spec import Props

API_VERSION = "2023-11-03"


class AzureBlobExporter(ObjectExporter, HttpExporter):
    name = "azure-blob"

    def configure(self, props: Props) -> None:
        self.endpoint = props.req("endpoint").rstrip("/")
        self.container = props.text("container") or props.req("containerName")
        self.sas = (props.text("sasToken") or "").lstrip("?")
        tenant, client, secret = props.text("tenantId"), props.text("clientId"), props.text("clientSecret")
        authority = props.text("authorityHost", AZURE_AUTHORITY) or AZURE_AUTHORITY
        self.tokens: TokenSource | None = None
        if not self.sas:
            if not (tenant and client and secret):
                raise ConfigError(f"{props.where}: give sasToken, or tenantId, clientId and clientSecret")
            self.tokens = azure_client_credentials(
                lambda: self.client, authority, tenant, client, secret, "https://storage.azure.com/.default"
            )
        self.object_options(props)
        self.http_options(props)

    def put(self, name: str, data: bytes, content_type: str) -> str:
        url = f"{self.endpoint}/{self.container}/{quote(name)}"
        headers = {"x-ms-blob-type": "BlockBlob", "x-ms-version": API_VERSION, "Content-Type": content_type}
        if self.tokens is not None:
            headers["Authorization"] = f"Bearer {self.tokens.token()}"
        self.request("PUT", url + (f"?{self.sas}" if self.sas else ""), content=data, headers=headers)
        return url
