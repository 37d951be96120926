"""The JSON API (``/api/v1``), one router per resource; documented at ``/openapi.json``."""
