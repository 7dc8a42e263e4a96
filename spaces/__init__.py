"""The Gradio Space (app.py), shipped inside the package so `hf-frozenlm demo` runs the same app.

On the Space, app.py runs as a script from this folder; this file is not uploaded (see hf_frozenlm.space).
"""
