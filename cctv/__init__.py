"""Video inference: detector -> ByteTrack -> PAR on crops -> smoothed labels -> annotated outputs."""
from cctv.detectors import Detections, DetectorError, build_detector
from cctv.pipeline import VideoError, VideoOptions, list_videos, process_video

__all__ = ["Detections", "DetectorError", "VideoError", "VideoOptions", "build_detector", "list_videos",
           "process_video"]
