"""The REST face: `tuneforge serve`, a FastAPI app over the serving engines."""
