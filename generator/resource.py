"""The OpenTelemetry resource of payment-service: on spans, and as `target_info` labels.

live_app sets the same attributes (OTEL_RESOURCE_ATTRIBUTES defaults), so the two agree.
"""

from __future__ import annotations

from .model import Attributes

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
