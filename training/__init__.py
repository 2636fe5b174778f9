"""Train the course models and export them for serving (`python -m training --help`)."""
