"""Gradio widgets of the MagicID app. Builds components and takes the functions they call as arguments;
imports no torch and loads no model."""
