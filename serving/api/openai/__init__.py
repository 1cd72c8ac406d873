"""The OpenAI dialect: chat completions and legacy completions."""

from ..dialect import Dialect
from . import chat, completions
from .common import error_body

CHAT = Dialect("openai-chat", chat.adapt, error_body)
COMPLETIONS = Dialect("openai-completions", completions.adapt, error_body)
