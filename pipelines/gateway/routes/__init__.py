"""The gateway's routes, one module per concern; :func:`pipelines.gateway.app.create_app` includes them."""
