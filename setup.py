from setuptools import setup

setup(
    name="hf_frozenlm",
    version="0.2.0",
    description="Frozen LLM transformer blocks as visual encoder layers (ICLR 2024), native to the Hugging Face stack",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # modeling/ is the Hub-portable model code; it ships as the subpackage hf_frozenlm.modeling.
    # spaces/ is the Gradio Space; it ships as hf_frozenlm.spaces so `hf-frozenlm demo` runs the same app.
    packages=[
        "hf_frozenlm", "hf_frozenlm.analysis", "hf_frozenlm.commands", "hf_frozenlm.data", "hf_frozenlm.hub",
        "hf_frozenlm.metrics", "hf_frozenlm.tasks", "hf_frozenlm.training", "hf_frozenlm.modeling", "hf_frozenlm.spaces",
    ],
    package_dir={"hf_frozenlm": "hf_frozenlm", "hf_frozenlm.modeling": "modeling", "hf_frozenlm.spaces": "spaces"},
    package_data={
        "hf_frozenlm.spaces": ["README.md", "requirements.txt", "examples/*.png", "examples/*/*"],
        # evaluate metric modules, loaded by local path so evaluation works offline.
        "hf_frozenlm.metrics": ["*/*.py"],
        "hf_frozenlm.hub": ["model_card_template.md"],
    },
    install_requires=[
        "torch>=2.4",
        "transformers>=5.24,<6",
        "huggingface_hub>=1.0",
        "safetensors>=0.4",
        "gguf>=0.10",
        "datasets>=3",
        "evaluate>=0.4.6",
        "peft>=0.17",
        "accelerate>=1.0",
        "scikit-learn>=1.3",
        "matplotlib>=3.7",
        "pillow>=10",
    ],
    extras_require={
        # The demo's tabs: plotly draws point clouds in 3D, trimesh reads .ply/.off uploads, PyAV decodes videos.
        "demo": ["gradio==6.31.0", "plotly>=6", "trimesh>=4", "av>=12"],
        # PyAV decodes video files (data and pipeline("video-classification")); h5py reads ModelNet40/ScanObjectNN.
        "video": ["av>=12"],
        "points": ["h5py>=3"],
        "all": ["gradio==6.31.0", "plotly>=6", "trimesh>=4", "av>=12", "h5py>=3"],
        "test": ["pytest>=8", "pytest-timeout>=2", "selenium>=4.20", "av>=12", "h5py>=3", "plotly>=6", "trimesh>=4"],
    },
    entry_points={"console_scripts": ["hf-frozenlm=hf_frozenlm.cli:main"]},
)
