"""What the server tells its operators: Prometheus metrics and a structured access log.

One `Telemetry` per app (built in create_app) owns its own metrics registry, so two apps
in one process never share counters; a per-request `RequestRecord` gathers what the API
layer learns (tokens, timings, finish) and is closed exactly once, when the response ends.
"""

from .access_log import ACCESS_LOGGER, configure_access_log
from .middleware import MetricsResource, Telemetry
from .observer import NO_OBSERVER, observer_of

__all__ = ["ACCESS_LOGGER", "NO_OBSERVER", "MetricsResource", "Telemetry", "configure_access_log",
           "observer_of"]
