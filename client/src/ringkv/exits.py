"""The exit statuses every ringkv command line shares (`ringkv`, `kubectl ringkv`)."""

OK, NOT_FOUND, BAD_INPUT, CLUSTER_ERROR = 0, 1, 2, 3

__all__ = ["BAD_INPUT", "CLUSTER_ERROR", "NOT_FOUND", "OK"]
