"""Access logs: RequestEvents as Traefik's JSON or Common Log Format lines, written off the
hot path (`log.AccessLog`), formatted and filtered by pure functions (`format`)."""

from kroute.gateway.access.format import HeaderModes, LogFilters, LogFormat, common_line, json_line
from kroute.gateway.access.log import AccessLog, AccessLogStatistics

__all__ = [
    "AccessLog", "AccessLogStatistics", "HeaderModes", "LogFilters", "LogFormat", "common_line",
    "json_line",
]  # fmt: skip
