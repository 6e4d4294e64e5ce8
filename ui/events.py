"""Event options shared by the tabs.

Only the endpoints meant for API clients are public (listed in `PUBLIC_ENDPOINTS`); the widgets' own events
are private, so they appear in no API docs and the Gradio client libraries cannot call them.
"""

PRIVATE = {"api_visibility": "private"}
PUBLIC_ENDPOINTS = ("/restore",)
