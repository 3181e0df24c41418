"""Fixtures: a local OpenAI-compatible server (see fake_server.py) and the environment pointing at it."""

from tests.openai_backend.fake_server import api_env, fake_api, no_cancel_left_over  # noqa: F401 - pytest fixtures
