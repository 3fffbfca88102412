"""Request and response bodies of the API, one module per resource (component names in
the OpenAPI schema are their class names)."""
