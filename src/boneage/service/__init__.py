"""Service stage: a FastAPI app over one loaded model (`boneage serve`)."""
