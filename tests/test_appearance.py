"""Appearance-aware identities (cctv/appearance.py): a swap at a crossing is repaired, a re-found person keeps
their id, different-looking or far-away people are not linked."""
from __future__ import annotations

import numpy as np

from cctv.appearance import AppearanceLinker, colour_embedding, similarity
from cctv.tracking import ByteTracker
from cctv.detections import Detections

RED, BLUE = (0, 0, 220), (220, 60, 0)  # BGR


def _frame(people: list[tuple[tuple[int, int, int], list[float]]]) -> np.ndarray:
    img = np.full((240, 320, 3), 128, np.uint8)
    for colour, (x1, y1, x2, y2) in people:
        img[int(y1):int(y2), int(x1):int(x2)] = colour
    return img


def test_colour_embedding_tells_colours_apart():
    red, blue = _frame([(RED, [10, 10, 40, 100])]), _frame([(BLUE, [10, 10, 40, 100])])
    a, b = colour_embedding(red, np.array([10, 10, 40, 100])), colour_embedding(blue, np.array([10, 10, 40, 100]))
    assert a.shape == (64,) and abs(a[:32].sum() - 1) < 1e-5
    assert similarity(a, a) > 0.99 and similarity(a, b) < 0.1
    assert colour_embedding(red, np.array([0, 0, 3, 3])) is None


def test_ids_swapped_by_iou_association_at_a_crossing_are_repaired():
    linker = AppearanceLinker(fps=10, max_lost=20)
    ids = []
    for t in range(12):  # red walks right, blue walks left; they overlap on frames 5-6
        xr, xb = 40 + 20 * t, 260 - 20 * t
        boxes = np.array([[xr, 60, xr + 30, 150], [xb, 60, xb + 30, 150]], float)
        raw = np.array([1, 2]) if t < 6 else np.array([2, 1])  # IoU-only association swapped them
        frame = _frame([(RED, boxes[0]), (BLUE, boxes[1])])
        ids.append(linker.update(raw, boxes, frame).tolist())
    assert all(i == [1, 2] for i in ids[:5]), ids
    assert ids[-1] == [1, 2] and linker.swaps == 1, ids  # red is 1 again, blue 2


def test_a_person_found_again_under_a_new_tracker_id_keeps_the_old_id():
    linker = AppearanceLinker(fps=10, max_lost=20)
    for t in range(5):
        box = np.array([[50 + 5 * t, 60, 80 + 5 * t, 150]], float)
        assert linker.update(np.array([1]), box, _frame([(RED, box[0])])).tolist() == [1]
    linker.update(np.zeros(0, int), np.zeros((0, 4)), _frame([]))  # lost for two frames (occluded)
    linker.update(np.zeros(0, int), np.zeros((0, 4)), _frame([]))
    box = np.array([[90, 62, 120, 152]], float)
    assert linker.update(np.array([7]), box, _frame([(RED, box[0])])).tolist() == [1]
    assert linker.update(np.array([7]), box, _frame([(RED, box[0])])).tolist() == [1]
    assert linker.relinks == 1


def test_no_relink_for_another_look_or_too_far():
    linker = AppearanceLinker(fps=10, max_lost=20)
    box = np.array([[50, 60, 80, 150]], float)
    linker.update(np.array([1]), box, _frame([(RED, box[0])]))
    linker.update(np.zeros(0, int), np.zeros((0, 4)), _frame([]))
    assert linker.update(np.array([2]), box, _frame([(BLUE, box[0])])).tolist() == [2]  # looks different
    far = np.array([[280, 60, 310, 150]], float)
    assert linker.update(np.array([3]), far, _frame([(RED, far[0])])).tolist() == [3]  # too far in 0.2 s
    assert linker.relinks == 0


def test_byte_tracker_with_appearance_keeps_ids_and_needs_no_frame():
    trk = ByteTracker(10, 0.3, lost_seconds=2.0, match_thresh=0.95, appearance=True)
    seen = set()
    for t in range(6):
        box = np.array([[50 + 4 * t, 60, 80 + 4 * t, 150]], np.float32)
        out = trk.update(Detections(box, np.array([0.9], np.float32)), _frame([(RED, box[0])]))
        seen.update(out.ids.tolist())
    assert len(seen) == 1
    out = trk.update(Detections(box, np.array([0.9], np.float32)))  # no frame: ByteTrack's ids as they are
    assert len(out) == 1


def test_roc_auc_hand_case():
    from scripts.benchmark_appearance import roc_auc

    # same pairs score 0.9, 0.5; other pairs 0.6, 0.1: of the 4 (same, other) comparisons 3 are won -> 0.75
    assert roc_auc(np.array([1, 1, 0, 0], bool), np.array([0.9, 0.5, 0.6, 0.1])) == 0.75
    assert roc_auc(np.array([1, 0], bool), np.array([0.3, 0.3])) == 0.5  # a tie counts half
    assert np.isnan(roc_auc(np.array([1, 1], bool), np.array([0.3, 0.4])))


def test_appearance_features_of_par_and_reid_checkpoints(tmp_path):
    from tests._index_helpers import make_reid_checkpoint
    from tests._video_helpers import make_checkpoint
    from tools.inference import Predictor

    crops = [np.full((40, 20, 3), v, np.uint8) for v in (0, 128, 255)]
    par = Predictor.from_checkpoint(make_checkpoint(tmp_path / "par.pth"), device="cpu")
    f = par.appearance_features(crops)
    assert f.shape[0] == 3 and f.shape[1] == par.model.model.backbone.out_dim and np.isfinite(f).all()
    reid = Predictor.from_checkpoint(make_reid_checkpoint(tmp_path / "reid.pth"), device="cpu")
    np.testing.assert_allclose(reid.appearance_features(crops), reid.embed_images(crops), rtol=1e-5, atol=1e-6)


def test_benchmark_appearance_separates_two_coloured_walkers(tmp_path, capsys):
    import cv2

    from scripts.benchmark_appearance import main

    video, gt_lines = tmp_path / "two.avi", []
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for f in range(1, 31):
        people = [(RED, [10 + 3 * f, 40, 50 + 3 * f, 200]), (BLUE, [250 - 3 * f, 40, 290 - 3 * f, 200])]
        writer.write(_frame(people))
        for pid, (_, (x1, y1, x2, y2)) in enumerate(people, 1):
            gt_lines.append(f"{f},{pid},{x1},{y1},{x2 - x1},{y2 - y1},1,1,1")
    writer.release()
    (tmp_path / "gt.txt").write_text("\n".join(gt_lines) + "\n")
    assert main(["--video", str(video), "--gt", str(tmp_path / "gt.txt"), "--every", "2", "--min-gap", "4"]) == 0
    out = capsys.readouterr().out
    assert "30 ground-truth crops of 2 people" in out
    colour_all = next(line for line in out.splitlines() if line.startswith("| colour") and "| all |" in line)
    assert colour_all.split("|")[4].strip() == "1.000"  # red vs blue: every same pair above every other pair
