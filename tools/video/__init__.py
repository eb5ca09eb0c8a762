"""Video inference: detector -> ByteTrack -> PAR on crops -> smoothed labels -> annotated outputs."""
from tools.video.detectors import Detections, DetectorError, build_detector
from tools.video.pipeline import VideoError, VideoOptions, list_videos, process_video

__all__ = ["Detections", "DetectorError", "VideoError", "VideoOptions", "build_detector", "list_videos",
           "process_video"]
