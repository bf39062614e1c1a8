"""InstructGPT, step by step: the course's importable package.

Each module is one concept of the pipeline; the notebooks import them and the exercises check
student code against them. Start with `helpers.config` (profiles and paths) and
`helpers.world` (the Instruction World the tiny profile trains on).
"""

__version__ = "0.1.0"
