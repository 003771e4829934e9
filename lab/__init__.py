"""The lab's shared part: run folders, logging, checkpoints, the trainer and the `lab` command."""
from lab.errors import LabError
from lab.media import Arrays, Image, Video

__all__ = ["LabError", "Arrays", "Image", "Video"]
