"""r1lab: DeepSeek-V3 and the DeepSeek-R1 training system in one readable PyTorch codebase."""
__version__ = "0.1.0"
