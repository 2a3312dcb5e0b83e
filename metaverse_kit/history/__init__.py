"""History: replaying the Capture lake into Arrow, and questions asked of it."""
