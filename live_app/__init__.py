"""payment-service: a real FastAPI + SQLAlchemy service with switchable incident modes.

The real-traffic path and the source of live recordings: it emits, from real
instrumentation, the telemetry the generator imitates. Run it with
``uvicorn live_app.app:app`` or ``python -m live_app``.
"""
