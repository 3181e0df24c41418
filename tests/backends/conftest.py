"""Fixtures shared by the backend contract: the fake OpenAI server for the openai leg."""

from tests.openai_backend.fake_server import api_env, fake_api, no_cancel_left_over  # noqa: F401 - pytest fixtures
