"""The Streamlit assistant (app.py) and the small API client it and `agentlm chat` use."""
