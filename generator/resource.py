"""The OpenTelemetry resource of payment-service: on spans, and as `target_info` labels.

live_app sets the same attributes (OTEL_RESOURCE_ATTRIBUTES defaults), so the two agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .model import Attributes

if TYPE_CHECKING:
    from .simulate import Restart

RESOURCE: Attributes = (
    ("deployment.environment", "demo"),
    ("service.instance.id", "payment-service-7d9f8c6b5-x2x9k"),
    ("service.name", "payment-service"),
    ("service.namespace", "shop"),
    ("service.version", "1.4.2"),
    ("telemetry.sdk.language", "python"),
    ("telemetry.sdk.name", "opentelemetry"),
    ("telemetry.sdk.version", "1.45.2"),
)
INSTRUMENTATION_VERSION = "0.66b2"
SCHEMA_URL = "https://opentelemetry.io/schemas/1.21.0"


def resource_of(restarts: tuple[Restart, ...], era: int) -> Attributes:
    """The resource of the ``era``-th process of the window (0: the one running at its
    start): a deploy brings a new version on a new pod, a restart the same ones."""
    if era == 0:
        return RESOURCE
    new = {"service.version": restarts[era - 1].version,
           "service.instance.id": restarts[era - 1].instance}
    return tuple((k, new.get(k, v)) for k, v in RESOURCE)
