"""The web app on a footage index (``--mode serve``): ``server`` (FastAPI + uvicorn) and its static page."""
