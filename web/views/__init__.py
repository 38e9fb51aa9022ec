"""The server-rendered pages, one module per page group; they use the same selectors as the API."""
