"""The serving room: the HTTP app, uploads, the decode batcher and the server under the app
(needs the `serve` extras: fastapi, uvicorn, python-multipart). Imports inference and the core."""
